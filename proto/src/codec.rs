//! The codec of the `vigil.v1` services: prost's, except that a request
//! that does not decode (a string that is not UTF-8, a truncated field) is
//! `INVALID_ARGUMENT`, not prost's `INTERNAL`.
//!
//! gRPC's status code table lists "error parsing request proto" under
//! `INTERNAL`, a code clients read as "the server broke" and may retry.
//! Here the bytes came from the client and retrying them can never work,
//! so Vigil answers as for any other bad argument (issue 14). The same
//! codec decodes responses in Vigil's own clients, where a message that
//! does not decode is reported the same way.

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with decoding errors as `INVALID_ARGUMENT`.
#[derive(Debug, Default)]
pub struct VigilCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for VigilCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = VigilDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        VigilDecoder(self.0.decoder())
    }
}

/// [`ProstDecoder`] with its errors as `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct VigilDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for VigilDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!("the message does not decode: {}", status.message()))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
