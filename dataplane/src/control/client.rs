//! A blocking client for the control socket: one request, one reply, in order.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::control::proto::{Command, ProtoError, Request, Response};

/// Where `sluice ctl` looks when no `--socket` is given (the systemd unit's runtime directory).
pub const DEFAULT_SOCKET: &str = "/run/sluice/control.sock";

/// Long enough for the slowest command (compiling a large pipeline); a dead daemon is noticed
/// by the socket closing, not by this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    #[error("the daemon closed the connection without replying")]
    Closed,
    #[error("unreadable reply: {0}")]
    BadReply(String),
    /// The daemon answered with an error.
    #[error("{0}")]
    Server(ProtoError),
}

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let connect_err = |source| ClientError::Connect { path: path.to_owned(), source };
        let stream = UnixStream::connect(path).map_err(connect_err)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(connect_err)?;
        let writer = stream.try_clone().map_err(connect_err)?;
        Ok(Client { reader: BufReader::new(stream), writer, next_id: 1 })
    }

    /// Sends `command` and returns its result.
    pub fn call(&mut self, command: Command) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = Request { id: Value::from(id), command }.to_line();
        self.writer.write_all(line.as_bytes())?;
        let mut reply = String::new();
        if self.reader.read_line(&mut reply)? == 0 {
            return Err(ClientError::Closed);
        }
        let response: Response = serde_json::from_str(reply.trim_end()).map_err(|e| ClientError::BadReply(e.to_string()))?;
        // Errors the server sends before reading a request (busy, permission) carry no id.
        if !response.id.is_null() && response.id != id {
            return Err(ClientError::BadReply(format!("reply to request {} while waiting for {id}", response.id)));
        }
        response.into_result().map_err(ClientError::Server)
    }

    /// [`Client::call`], with the result read as `T`.
    pub fn call_as<T: DeserializeOwned>(&mut self, command: Command) -> Result<T, ClientError> {
        let value = self.call(command)?;
        serde_json::from_value(value).map_err(|e| ClientError::BadReply(e.to_string()))
    }
}
