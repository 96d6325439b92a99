//! Stream wrappers of the proxy's client connections (`idle::Watched`,
//! `server::Preface`, `linger::Lingering`) each look at one direction or
//! at the close; the writes they leave alone go straight to the stream
//! they wrap.

/// The write methods of `AsyncWrite` but `poll_shutdown`, passed to the
/// wrapped stream in field `$inner`. Used inside an
/// `impl AsyncWrite for ...` block.
macro_rules! delegate_writes {
    ($inner:ident) => {
        fn poll_write(
            mut self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            data: &[u8],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.$inner).poll_write(cx, data)
        }

        fn poll_write_vectored(
            mut self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            bufs: &[::std::io::IoSlice<'_>],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.$inner).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$inner.is_write_vectored()
        }

        fn poll_flush(
            mut self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.$inner).poll_flush(cx)
        }
    };
}

pub(crate) use delegate_writes;
