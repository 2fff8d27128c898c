//! `echo-limit`: see `echo-limit --help` and the crate documentation.

use std::io::Write;
use std::process::ExitCode;

use ferroloop_echo_limit::server::{Listener, Server};
use ferroloop_echo_limit::{args, sys};

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) if msg == args::USAGE => {
            println!("{msg}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("echo-limit: {msg}");
            return ExitCode::from(2);
        }
    };
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-limit: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &args::Args) -> std::io::Result<()> {
    if let Some(cpu) = args.cpu {
        sys::pin_to_cpu(cpu)?;
    }
    // Before anything else, so a SIGTERM right after READY already waits in the signalfd.
    let signals = sys::stop_signals()?;
    let mut server = Server::new(Listener::bind(&args.address)?, signals)?;
    let address = server.listener().address()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {address} pid={}", std::process::id())?;
    out.flush()?;
    drop(out);
    server.run()
}
