//! `pollux`: a polled storage target.
//!
//! With no arguments it runs an embedded default (one adaptive reactor on
//! core 0 and a 1 GiB ram bdev `ram0`); `--config FILE` reads a TOML config;
//! `--check-config FILE` validates one and exits; `perf local` runs a load.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use pollux_target::config::Config;
use pollux_target::{daemon, perf, perf_nvmf, rpc};

/// Exit status for configuration errors (a contract with scripts).
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(name = "pollux", version, about = "A userspace polled storage target")]
struct Cli {
    /// TOML configuration file (default: the embedded default).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE and exit (status 2 if invalid).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// SPDK-format JSON config (what `save_config` writes) to apply at start.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// JSON-RPC socket (default: `[rpc] socket`, or /var/tmp/pollux.sock).
    #[arg(long, value_name = "PATH", global = true)]
    rpc_socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Load generators.
    #[command(subcommand)]
    Perf(PerfCommand),
    /// Calls a JSON-RPC method of a running pollux and prints the result.
    Rpc {
        /// Method name, e.g. bdev_get_bdevs.
        method: String,
        /// Params as a JSON object, e.g. '{"name": "ram0"}'.
        params: Option<String>,
    },
}

#[derive(Subcommand)]
enum PerfCommand {
    /// Drive a bdev through the graph on every configured reactor.
    Local(LocalArgs),
    /// Drive a remote namespace over NVMe/TCP (like spdk_nvme_perf).
    Nvmf(NvmfArgs),
}

#[derive(Args)]
struct NvmfArgs {
    /// Target address.
    #[arg(long, default_value = "127.0.0.1:4420")]
    addr: std::net::SocketAddr,
    /// Subsystem NQN.
    #[arg(long)]
    nqn: String,
    /// Namespace ID.
    #[arg(long, default_value_t = 1)]
    nsid: u32,
    #[command(flatten)]
    load: LoadArgs,
    /// I/O queues (one TCP connection each).
    #[arg(long, default_value_t = 1)]
    connections: u16,
    /// Ask for header digests.
    #[arg(long)]
    hdr_digest: bool,
    /// Ask for data digests.
    #[arg(long)]
    data_digest: bool,
}

/// The load shape shared by the perf commands.
#[derive(Args)]
struct LoadArgs {
    /// Access pattern.
    #[arg(long, value_enum, default_value = "randread")]
    rw: perf::Rw,
    /// I/O size in bytes.
    #[arg(long, default_value_t = 4096)]
    bs: u32,
    /// Queue depth per reactor (local) or per connection (nvmf).
    #[arg(long, default_value_t = 128)]
    qd: u32,
    /// Run time in seconds.
    #[arg(long, default_value_t = 10)]
    time: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LocalArgs {
    /// Target config (default: the embedded default).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Bdev to drive.
    #[arg(long)]
    bdev: String,
    #[command(flatten)]
    load: LoadArgs,
}

impl LoadArgs {
    fn perf_spec(&self) -> perf::PerfSpec {
        perf::PerfSpec {
            rw: self.rw,
            bs: self.bs,
            qd: self.qd,
            time: Duration::from_secs(self.time),
        }
    }
}

/// `pollux rpc`: prints the result as pretty JSON; on a JSON-RPC error
/// prints it to stderr and exits 1.
fn rpc_client(socket: &Path, method: &str, params: Option<&str>) -> ExitCode {
    let params = match params.map(serde_json::from_str::<serde_json::Value>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            eprintln!("pollux: params are not JSON: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match rpc::call(socket, method, params) {
        Ok(answer) => {
            if let Some(err) = answer.get("error") {
                eprintln!("pollux: {method}: {err}");
                ExitCode::FAILURE
            } else {
                let result = answer.get("result").cloned().unwrap_or_default();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result).expect("serializable")
                );
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("pollux: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads `path` (or the embedded default), printing one error line naming
/// the file and key on failure.
fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    match path {
        None => Ok(Config::embedded_default()),
        Some(p) => Config::load(p).map_err(|e| {
            eprintln!("pollux: {}: {e}", p.display());
            ExitCode::from(EXIT_CONFIG)
        }),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pollux_target::logging::init();
    if let Some(path) = &cli.check_config {
        return match load_config(Some(path)) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        };
    }
    let result = match cli.command {
        None => match load_config(cli.config.as_deref()) {
            Ok(cfg) => {
                let opts = daemon::RunOptions {
                    // The command line wins over the config file.
                    rpc_socket: cli
                        .rpc_socket
                        .clone()
                        .unwrap_or_else(|| cfg.rpc.socket.clone()),
                    json_config: cli.json.clone(),
                };
                daemon::run(cfg, opts)
            }
            Err(code) => return code,
        },
        Some(Command::Rpc { method, params }) => {
            // --rpc-socket, else the `[rpc] socket` of --config, else the
            // default: the same order the daemon resolves it in.
            let socket = match (&cli.rpc_socket, &cli.config) {
                (Some(s), _) => s.clone(),
                (None, Some(_)) => match load_config(cli.config.as_deref()) {
                    Ok(cfg) => cfg.rpc.socket,
                    Err(code) => return code,
                },
                (None, None) => PathBuf::from(rpc::DEFAULT_SOCKET),
            };
            return rpc_client(&socket, &method, params.as_deref());
        }
        Some(Command::Perf(PerfCommand::Local(a))) => {
            let cfg = match load_config(a.config.as_deref()) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            let spec = a.load.perf_spec();
            perf::run_local(&cfg, &a.bdev, &spec).map(|report| {
                if a.load.json {
                    println!("{}", serde_json::to_string(&report).expect("serializable"));
                } else {
                    perf::print_text(&a.bdev, &spec, cfg.reactors.cores.len(), &report);
                }
            })
        }
        Some(Command::Perf(PerfCommand::Nvmf(a))) => {
            let spec = perf_nvmf::NvmfSpec {
                addr: a.addr,
                nqn: a.nqn,
                nsid: a.nsid,
                load: a.load.perf_spec(),
                connections: a.connections,
                hdgst: a.hdr_digest,
                ddgst: a.data_digest,
            };
            perf_nvmf::run(&spec).map(|report| {
                if a.load.json {
                    println!("{}", serde_json::to_string(&report).expect("serializable"));
                } else {
                    println!(
                        "{} {} nsid {}: {:?} bs={} qd={} x {} connection(s), {:?}",
                        spec.addr,
                        spec.nqn,
                        spec.nsid,
                        spec.load.rw,
                        spec.load.bs,
                        spec.load.qd,
                        spec.connections,
                        spec.load.time
                    );
                    perf::print_report(&report);
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A device that cannot be attached is a configuration problem: the
        // one line says which device and what to do, and the status is the
        // config error's.
        Err(e) if is_nvme_attach_error(&e) => {
            eprintln!("pollux: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("pollux: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// True if starting failed because an NVMe controller could not be attached.
fn is_nvme_attach_error(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<pollux_target::bdev::BdevError>(),
        Some(pollux_target::bdev::BdevError::Nvme(
            pollux_target::nvme_bdev::NvmeBdevError::Attach(_)
        ))
    )
}
