//! TLS on every listener (rustls), with the certificate and key read from files and read again
//! when the files change: a renewed certificate (cert-manager, certbot, a rotation job) is
//! served to new connections within about a second, and connections already open keep the
//! session they negotiated. Client certificates can be required on the OTLP receivers.
//!
//! Also the one connection type every listener serves, plain or TLS ([`Conn`]), and the accept
//! loop that does TLS handshakes off the accept path ([`Incoming`]): a slow or hostile client
//! cannot hold up the others.

use std::{
    fs::File,
    io::BufReader,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        crypto::CryptoProvider,
        pki_types::{CertificateDer, PrivateKeyDer},
        server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
        sign::CertifiedKey,
    },
    server::TlsStream,
};

/// Where the certificate, key and (optionally) the client CA are.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and private key, and checks that they belong together.
fn load_certified_key(cert: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(
        File::open(cert).with_context(|| format!("cannot open {}", cert.display()))?,
    ))
    .collect::<Result<_, _>>()
    .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let file = File::open(key_path).with_context(|| format!("cannot open {}", key_path.display()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut BufReader::new(file))
        .with_context(|| format!("{} is not a PEM private key", key_path.display()))?
        .with_context(|| format!("{} holds no private key", key_path.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow::anyhow!("the key in {} cannot be used: {e}", key_path.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        anyhow::anyhow!("the key does not belong to the certificate in {}: {e}", cert.display())
    })?;
    Ok(certified)
}

/// The certificate in force, swapped when the files change.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner())))
    }
}

/// The TLS settings of the process: one certificate for every listener, reloaded on change.
#[derive(Clone)]
pub(crate) struct Tls {
    files: TlsFiles,
    resolver: Arc<Resolver>,
    client_roots: Option<Arc<RootCertStore>>,
}

impl Tls {
    /// Loads the files; fails when they cannot be used.
    pub(crate) fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let key = load_certified_key(&files.cert, &files.key)?;
        let client_roots = match &files.client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
                for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
                    let cert =
                        cert.with_context(|| format!("{} is not a PEM certificate", path.display()))?;
                    roots
                        .add(cert)
                        .with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
                }
                anyhow::ensure!(!roots.is_empty(), "{} holds no CA certificate", path.display());
                Some(Arc::new(roots))
            }
            None => None,
        };
        Ok(Self { files, resolver: Arc::new(Resolver { current: RwLock::new(Arc::new(key)) }), client_roots })
    }

    /// An acceptor offering `alpn` (e.g. `h2`, `http/1.1`), requiring a client certificate
    /// signed by the client CA when `client_auth` and one is configured.
    pub(crate) fn acceptor(&self, alpn: &[&[u8]], client_auth: bool) -> anyhow::Result<TlsAcceptor> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match (&self.client_roots, client_auth) {
            (Some(roots), true) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), provider())
                    .build()
                    .context("the client CA cannot verify client certificates")?,
            ),
            _ => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(&self.resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Watches the certificate and key files every `every`, and serves the new pair once both
    /// read and match. A half-written pair (the certificate replaced, the key not yet) is
    /// retried until it matches; the old pair stays in force meanwhile.
    pub(crate) async fn watch(
        self,
        every: Duration,
        on_reload: impl Fn(Result<String, String>) + Send + 'static,
    ) {
        let stamp = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
        let stamps = |f: &TlsFiles| (stamp(&f.cert), stamp(&f.key));
        let mut seen = stamps(&self.files);
        let mut pending = false;
        loop {
            tokio::time::sleep(every).await;
            let now = stamps(&self.files);
            if now == seen && !pending {
                continue;
            }
            let changed = now != seen;
            seen = now;
            match load_certified_key(&self.files.cert, &self.files.key) {
                Ok(key) => {
                    let subject = describe(&key);
                    *self.resolver.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                    pending = false;
                    tracing::info!(cert = %self.files.cert.display(), "Reloaded the TLS certificate: {subject}.");
                    on_reload(Ok(subject));
                }
                Err(e) => {
                    if changed {
                        tracing::warn!(error = %format!("{e:#}"), "The TLS files changed but cannot be used yet; the previous certificate stays.");
                        on_reload(Err(format!("{e:#}")));
                    }
                    pending = true;
                }
            }
        }
    }
}

/// The leaf certificate's SHA-256 fingerprint (as `openssl x509 -fingerprint -sha256` prints it).
pub(crate) fn fingerprint(key: &CertifiedKey) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.cert.first().map_or(&[][..], |c| c.as_ref()));
    digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn describe(key: &CertifiedKey) -> String {
    format!("leaf SHA-256 fingerprint {}", fingerprint(key))
}

/// A connection of any listener: plain TCP or TLS over TCP.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.tcp().local_addr().ok(),
            remote_addr: self.tcp().peer_addr().ok(),
        }
    }
}

/// Accepted connections, TLS handshakes done, in the order they complete.
pub(crate) struct Incoming {
    rx: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Incoming {
    /// Accepts on `listener`; with `tls`, each connection's handshake runs in a task of its own.
    pub(crate) fn new(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        what: &'static str,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (socket, addr) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot accept a connection on the {what}.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                match &tls {
                    None => {
                        if tx.send((Conn::Plain(socket), addr)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                                Ok(Ok(stream)) => {
                                    let _ = tx.send((Conn::Tls(Box::new(stream)), addr)).await;
                                }
                                Ok(Err(e)) => {
                                    tracing::info!(%addr, error = %e, "TLS handshake failed on the {what}.")
                                }
                                Err(_) => tracing::info!(%addr, "TLS handshake timed out on the {what}."),
                            }
                        });
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { rx, local })
    }

    /// The connections as a stream (for tonic).
    pub(crate) fn into_stream(self) -> impl futures::Stream<Item = std::io::Result<Conn>> + Send + 'static {
        futures::stream::unfold(self.rx, |mut rx| async move { rx.recv().await.map(|(c, _)| (Ok(c), rx)) })
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ended (it only does when nobody listens): wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A client's address, as the HTTP routes see it (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Incoming>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Incoming>) -> Self {
        Peer(*stream.remote_addr())
    }
}
