//! The floor for `benches/ratio.sh`: the tightest client we can write for `SELECT 1` through
//! PgBouncer, so thumper's and pgbench's CPU per query read as multiples of it. One tokio task
//! per connection on a single-threaded runtime, plain `TcpStream`s, the startup and md5 login
//! done by hand, then a pre-encoded simple `Query('SELECT 1')` written and the reply read until
//! `ReadyForQuery`: no driver, no channels, no allocation per query.
//!
//! A binary rather than a `[[bench]]`: a bench target is built with the bench profile, which
//! here rebuilds every dependency (14 minutes on 2 cores); this one file reuses the release build.
//!
//!   floor URL CONNECTIONS RATE SECONDS     # RATE queries/s over all connections; 0 = flat out
//!   FLOOR_DRIVER=tokio-postgres floor ...  # the same loop through tokio-postgres's client
//!
//! The second form keeps everything but the driver (one task per connection, the same
//! timetable, one thread) and sends each query with `Client::simple_query_raw`, as thumper's
//! simple protocol does: what it costs over the first is the driver's share of thumper's cost.
//!
//! Prints `queries N` (queries completed) on stdout; any failure exits 1.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;

use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;

/// `Query("SELECT 1")`: type, length (4 + 9 bytes of text and its NUL), text.
const SELECT1: &[u8] = b"Q\0\0\0\x0dSELECT 1\0";

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Target {
    url: String,
    addr: String,
    user: String,
    password: String,
    dbname: String,
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, connections, rate, seconds] = args.as_slice() else {
        return Err("usage: floor URL CONNECTIONS RATE SECONDS (RATE 0 = flat out)".into());
    };
    let target = target(url)?;
    let connections: usize = connections.parse()?;
    let rate: f64 = rate.parse()?;
    let seconds: f64 = seconds.parse()?;
    let runtime = if std::env::var("FLOOR_RUNTIME").is_ok_and(|r| r == "multi") {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    let queries = runtime.block_on(run(target, connections, rate, seconds))?;
    println!("queries {queries}");
    Ok(())
}

fn target(url: &str) -> Result<Target, Error> {
    let config: tokio_postgres::Config = url.parse()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => return Err("the URL needs a TCP host".into()),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().ok_or("the URL needs a user")?.to_owned();
    let password = config.get_password().unwrap_or_default();
    Ok(Target {
        url: url.to_owned(),
        addr: format!("{host}:{port}"),
        dbname: config.get_dbname().unwrap_or(&user).to_owned(),
        password: String::from_utf8(password.to_vec())?,
        user,
    })
}

/// Logs every connection in first, then starts the clock; returns the queries completed.
async fn run(target: Target, connections: usize, rate: f64, seconds: f64) -> Result<u64, Error> {
    let through_driver = std::env::var("FLOOR_DRIVER").is_ok_and(|d| d == "tokio-postgres");
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        streams.push(if through_driver {
            let (client, connection) =
                tokio_postgres::connect(&target.url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Conn::Driver(client)
        } else {
            Conn::Raw(login(&target).await?)
        });
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            // Connection i runs arrivals i, i + N, i + 2N, … of one evenly spaced timetable.
            let schedule = (rate > 0.0).then(|| {
                let first = start + Duration::from_secs_f64(i as f64 / rate);
                (first, Duration::from_secs_f64(connections as f64 / rate))
            });
            tokio::spawn(drive(stream, schedule, end))
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

/// A logged-in connection: the socket itself, or tokio-postgres's client of it.
enum Conn {
    Raw(TcpStream),
    Driver(tokio_postgres::Client),
}

/// One connection's loop: wait for its next due time (none: flat out), send, read the reply.
async fn drive(
    mut conn: Conn,
    schedule: Option<(Instant, Duration)>,
    end: Instant,
) -> Result<u64, Error> {
    let mut buf = [0u8; 512];
    let mut done = 0;
    let mut due = schedule.map(|(first, _)| first);
    let mut timer = std::env::var("FLOOR_TIMER")
        .is_ok_and(|t| t == "precise")
        .then(thumper::executor::timer::PreciseTimer::new);
    loop {
        if let (Some(at), Some((_, every))) = (due.as_mut(), schedule) {
            if *at >= end {
                break;
            }
            match timer.as_mut() {
                Some(t) => t.sleep_until(*at).await,
                None => tokio::time::sleep_until((*at).into()).await,
            }
            *at += every;
        } else if Instant::now() >= end {
            break;
        }
        match &mut conn {
            Conn::Raw(stream) => {
                stream.write_all(SELECT1).await?;
                read_until_ready(stream, &mut buf).await?;
            }
            Conn::Driver(client) => {
                let replies = client.simple_query_raw("SELECT 1").await?;
                futures_util::pin_mut!(replies);
                while replies.try_next().await?.is_some() {}
            }
        }
        done += 1;
    }
    Ok(done)
}

/// Reads backend messages until `ReadyForQuery`; an `ErrorResponse` is a failure.
async fn read_until_ready(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), Error> {
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        filled += n;
        let mut at = 0;
        while filled - at >= 5 {
            let kind = buf[at];
            let len = u32::from_be_bytes(buf[at + 1..at + 5].try_into()?) as usize;
            if filled - at < 1 + len {
                break;
            }
            match kind {
                b'Z' => return Ok(()),
                b'E' => return Err(format!("server error: {:?}", &buf[at..at + 1 + len]).into()),
                _ => at += 1 + len,
            }
        }
        if at == 0 && filled == buf.len() {
            return Err("a reply message larger than the buffer".into());
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
}

/// Connects and logs in (trust, cleartext or md5), up to the first `ReadyForQuery`.
async fn login(t: &Target) -> Result<TcpStream, Error> {
    let mut stream = TcpStream::connect(&t.addr).await?;
    stream.set_nodelay(true)?;
    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for (k, v) in [("user", &t.user), ("database", &t.dbname)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    stream.write_all(&startup).await?;
    loop {
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await?;
        let len = u32::from_be_bytes(head[1..5].try_into()?) as usize;
        let mut msg = vec![0u8; len - 4];
        stream.read_exact(&mut msg).await?;
        match (
            head[0],
            msg.get(..4)
                .map(|c| u32::from_be_bytes(c.try_into().unwrap())),
        ) {
            (b'R', Some(0)) => {}
            (b'R', Some(3)) => password(&mut stream, t.password.as_bytes()).await?,
            (b'R', Some(5)) => {
                let inner = hex(&Md5::digest(
                    [t.password.as_bytes(), t.user.as_bytes()].concat(),
                ));
                let outer = hex(&Md5::digest([inner.as_bytes(), &msg[4..8]].concat()));
                password(&mut stream, format!("md5{outer}").as_bytes()).await?;
            }
            (b'R', code) => return Err(format!("unsupported authentication {code:?}").into()),
            (b'E', _) => {
                return Err(format!("login refused: {}", String::from_utf8_lossy(&msg)).into())
            }
            (b'Z', _) => return Ok(stream),
            _ => {}
        }
    }
}

async fn password(stream: &mut TcpStream, secret: &[u8]) -> Result<(), Error> {
    let mut msg = vec![b'p'];
    msg.extend_from_slice(&((secret.len() + 5) as u32).to_be_bytes());
    msg.extend_from_slice(secret);
    msg.push(0);
    Ok(stream.write_all(&msg).await?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
