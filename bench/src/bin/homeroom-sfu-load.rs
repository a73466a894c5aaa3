//! `homeroom-sfu-load`: the SFU load tool. Starts the release media node pinned to `--node-cpus`, then runs
//! the lecture (one publisher, growing subscriber counts) and the classroom (growing numbers of 6-peer
//! all-to-all rooms) with str0m peers over loopback UDP, and prints markdown tables (see
//! `homeroom_bench::sfu`). `scripts/bench-sfu.sh` builds everything and pins this tool to another CPU.
//!
//! ```text
//! homeroom-sfu-load                                   # both scenarios, default steps
//! homeroom-sfu-load --only lecture --lecture-steps 100,200,400 --measure-secs 5
//! homeroom-sfu-load --only floor --floor-steps 1000  # the loopback floor: seal and send only, no SFU
//! homeroom-sfu-load --smoke                           # tiny steps, 2-second windows (CI)
//! ```

use clap::{Parser, ValueEnum};
use homeroom_bench::sfu::{self, SfuConfig, SfuKind};
use homeroom_bench::udp_floor::{self, FloorConfig};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Lecture,
    Classroom,
    /// The loopback floor: seal and send only, no SFU (see `homeroom_bench::udp_floor`).
    Floor,
}

#[derive(Parser, Debug)]
#[command(about = "SFU load: str0m publishers and subscribers against a real media node")]
struct Args {
    /// Subscriber counts of the lecture.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200,300,400,600,800,1000")]
    lecture_steps: Vec<usize>,
    /// Room counts of the classroom.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,12,16,24,32")]
    classroom_steps: Vec<usize>,
    #[arg(long, default_value_t = 6)]
    room_size: usize,
    /// Subscriber counts of the loopback floor (each is run with `sendto` and with GSO).
    #[arg(long, value_delimiter = ',', default_value = "200,500,1000,1500")]
    floor_steps: Vec<usize>,
    /// Camera bitrate of every publisher (audio is added: 50 packets/s of 80 bytes).
    #[arg(long, default_value_t = 1200)]
    video_kbps: u32,
    #[arg(long, default_value_t = 10)]
    measure_secs: u64,
    #[arg(long, default_value_t = 1.0)]
    max_loss_pct: f64,
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
    /// CPUs for the media node (`taskset -c` syntax).
    #[arg(long, default_value = "0")]
    node_cpus: String,
    /// Peers read with UDP GRO: on loopback a GSO run from the node is then not cut into datagrams on the
    /// node's CPU (as with a NIC's segmentation offload). Off by default, as in the published figures.
    #[arg(long)]
    peer_gro: bool,
    /// Run only these scenarios.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// str0m's `chat` example binary: the lecture also runs against it, as the baseline.
    #[arg(long)]
    chat_binary: Option<std::path::PathBuf>,
    /// Tiny steps and short windows: proves the tool works, measures nothing.
    #[arg(long)]
    smoke: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    homeroom_bench::raise_fd_limit();
    let config = SfuConfig {
        lecture_steps: if args.smoke { vec![2, 4] } else { args.lecture_steps.clone() },
        classroom_steps: if args.smoke { vec![1] } else { args.classroom_steps.clone() },
        room_size: args.room_size,
        video_kbps: args.video_kbps,
        measure: Duration::from_secs(if args.smoke { 2 } else { args.measure_secs }),
        max_loss_pct: args.max_loss_pct,
        max_p99_ms: args.max_p99_ms,
        node_cpus: args.node_cpus.clone(),
        peer_gro: args.peer_gro,
    };
    let wants = |s: Scenario| args.only.is_empty() || args.only.contains(&s);
    let mut runs = Vec::new();
    if wants(Scenario::Lecture) {
        eprintln!("lecture: 1 publisher, subscribers {:?}", config.lecture_steps);
        runs.push(sfu::lecture(&config, &SfuKind::Homeroom { bwe: true }).await?);
        if !args.smoke {
            eprintln!("lecture on the node with bandwidth estimation off");
            runs.push(sfu::lecture(&config, &SfuKind::Homeroom { bwe: false }).await?);
        }
        if let Some(binary) = &args.chat_binary {
            eprintln!("lecture on the baseline, str0m's chat example ({})", binary.display());
            runs.push(sfu::lecture(&config, &SfuKind::Str0mChat { binary: binary.clone() }).await?);
        }
    }
    if wants(Scenario::Classroom) {
        eprintln!("classroom: rooms of {} {:?}", config.room_size, config.classroom_steps);
        runs.push(sfu::classroom(&config).await?);
    }
    let floor_config = FloorConfig {
        steps: if args.smoke { vec![2] } else { args.floor_steps.clone() },
        video_kbps: args.video_kbps,
        measure: config.measure,
        sender_cpu: first_cpu(&args.node_cpus)?,
    };
    let mut floor = Vec::new();
    if wants(Scenario::Floor) {
        eprintln!("loopback floor: seal and send only, subscribers {:?}", floor_config.steps);
        floor = udp_floor::run(&floor_config).await?;
    }
    let mut markdown = String::new();
    for run in &runs {
        markdown.push_str(&sfu::table(run, &config));
        markdown.push('\n');
    }
    if !floor.is_empty() {
        markdown.push_str(&udp_floor::table(&floor, &floor_config));
    }
    println!("{markdown}");
    let dir = homeroom_tests::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let base = dir.join(format!("sfu-{stamp}"));
    std::fs::write(base.with_extension("md"), &markdown)?;
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&(&config, &runs, &floor_config, &floor))?,
    )?;
    eprintln!("results: {}.md and .json", base.display());
    if args.smoke {
        // The smoke run must show that media flowed through the node at every step.
        anyhow::ensure!(!runs.is_empty() || !floor.is_empty(), "the smoke run measured nothing");
        for step in &floor {
            anyhow::ensure!(step.sent_pps > 0.0 && step.loss_pct < 1.0, "the floor lost packets: {step:?}");
        }
        for run in &runs {
            anyhow::ensure!(run.stopped.is_none(), "{} stopped: {:?}", run.scenario, run.stopped);
            anyhow::ensure!(!run.steps.is_empty(), "{}: no step was measured", run.scenario);
            for step in &run.steps {
                anyhow::ensure!(step.forwarded_pps > 0.0, "{} step {}: nothing forwarded", run.scenario, step.size);
            }
        }
    }
    Ok(())
}

/// The first CPU of a `taskset -c` list (`0`, `0-1`, `2,3`): where the floor's sender runs.
fn first_cpu(cpus: &str) -> anyhow::Result<usize> {
    cpus.split([',', '-'])
        .next()
        .and_then(|c| c.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("--node-cpus {cpus:?}: expected a CPU list such as 0 or 0-1"))
}
