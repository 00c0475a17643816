//! The power-cut harness, shared by `tests/power_loss.rs` (CI size) and
//! `examples/powercut_driver.rs` (long mode). Self-contained (std only); needs root, loop devices
//! and `mkfs.ext4`.
//!
//! A cut, simulated: the worker (`examples/powercut.rs`) runs on a fresh ext4 file system in an
//! image file mounted through a loop device. At the chosen moment (the instant the worker prints
//! a given acknowledgement, a random moment, or after it exited cleanly) the harness stops it with
//! SIGSTOP and copies the image. The copy holds what the file system had handed to its block
//! device, and nothing of what was still only in the page cache: what a power cut leaves. The
//! copy is then mounted (ext4 replays its journal) and the checker (`powercut check`) opens the
//! database on it and checks it against every acknowledgement printed before the cut.
//!
//! The file system is mounted with `commit=600`, so ext4 does not write its journal on its own
//! every five seconds: only what the store syncs is on the device.

#![allow(dead_code, unreachable_pub)]

#[path = "built.rs"]
mod built;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// When a cut comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// The instant the worker acknowledges its `n`th start.
    Start(usize),
    /// The instant it acknowledges its `n`th raised event.
    Raise(usize),
    /// The instant it acknowledges its `n`th checkpoint.
    Step(usize),
    /// The instant `wait` hands it its `n`th result.
    Done(usize),
    /// `ms` milliseconds after the worker exited cleanly.
    AfterExit(u64),
    /// `ms` milliseconds after the worker started.
    Random(u64),
}

impl Moment {
    fn matches(&self, line: &str, counts: &mut [usize; 4]) -> bool {
        let (slot, n) = match (self, line.split(' ').nth(1)) {
            (Moment::Start(n), Some("start")) => (0, n),
            (Moment::Raise(n), Some("raise")) => (1, n),
            (Moment::Step(n), Some("step")) => (2, n),
            (Moment::Done(n), Some("done")) => (3, n),
            _ => return false,
        };
        counts[slot] += 1;
        counts[slot] == *n
    }
}

/// One run of the harness.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub cuts: usize,
    pub scratch: PathBuf,
    pub worker: PathBuf,
    /// Extra arguments for `powercut work`.
    pub worker_args: Vec<String>,
    /// Draw a progress bar over the cuts (on a terminal; the long mode's driver sets it).
    pub progress: bool,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Summary {
    pub cuts: usize,
    /// Acknowledgements checked, over all cuts.
    pub acks: usize,
    pub violations: Vec<String>,
    /// Frame slots found on the devices the cuts left, over all cuts.
    pub slots: usize,
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "power cuts: {} cuts, {} acknowledgements checked, {} violations",
            self.cuts,
            self.acks,
            self.violations.len()
        )
    }

    /// How much of the cuts hit frames stored in slots.
    pub fn slots_line(&self) -> String {
        format!("power cuts: {} frame slots found on the devices the cuts left", self.slots)
    }
}

pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos() % u128::from(u64::MAX)).unwrap_or(7))
        .unwrap_or(7)
}

/// The moments of cut `i`: every kind of acknowledgement in turn, then random ones.
pub fn moment(i: usize, rng: &mut u64) -> Moment {
    let pick = |rng: &mut u64, n: u64| usize::try_from(splitmix(rng) % n).unwrap_or(0) + 1;
    match i % 6 {
        0 => Moment::Start(pick(rng, 4)),
        1 => Moment::Raise(pick(rng, 4)),
        2 => Moment::Step(pick(rng, 24)),
        3 => Moment::Done(pick(rng, 4)),
        4 => Moment::AfterExit(splitmix(rng) % 1500),
        _ => Moment::Random(splitmix(rng) % 3000),
    }
}

fn run_cmd(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A mounted ext4 image; unmounted when dropped.
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    fn new(image: &Path, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        run_cmd(Command::new("mount").args(["-o", "loop,commit=600"]).arg(image).arg(dir))?;
        Ok(Self { dir: dir.to_owned() })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for _ in 0..50 {
            if run_cmd(Command::new("umount").arg(&self.dir)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = run_cmd(Command::new("umount").arg("-l").arg(&self.dir));
    }
}

/// Checks that this machine can run the harness; the reason when it cannot.
pub fn preflight() -> Result<(), String> {
    let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("the power-cut harness needs root (loop devices and mount)".into());
    }
    run_cmd(Command::new("mkfs.ext4").arg("-V"))
        .map_err(|e| format!("the power-cut harness needs mkfs.ext4 (e2fsprogs): {e}"))?;
    run_cmd(Command::new("losetup").arg("-f"))
        .map_err(|e| format!("the power-cut harness needs a free loop device: {e}"))
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status();
}

/// Runs one cut; returns the acknowledgements checked, the violations found and the number of
/// frame slots the cut left.
pub fn cut(
    cfg: &Config,
    index: usize,
    moment: Moment,
) -> Result<(usize, Vec<String>, usize), String> {
    let dir = cfg.scratch.join(format!("cut-{index}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let image = dir.join("disk.img");
    let copy = dir.join("cut.img");
    run_cmd(Command::new("truncate").args(["-s", "256M"]).arg(&image))?;
    run_cmd(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
    let live = Mounted::new(&image, &dir.join("live"))?;
    let db = live.dir.join("db");
    let seed = cfg.seed.wrapping_add(index as u64);
    let mut child = Command::new(&cfg.worker)
        .arg("work")
        .arg("--db")
        .arg(&db)
        .args(["--seed", &seed.to_string()])
        .args(&cfg.worker_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.worker.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut acks = Vec::new();
    let mut counts = [0; 4];
    let deadline = match moment {
        Moment::Random(ms) => Some(started + Duration::from_millis(ms)),
        _ => None,
    };
    // Read acknowledgements until the moment comes, or the worker ends.
    let mut exited = false;
    loop {
        let wait = deadline
            .map_or(Duration::from_secs(120), |d| d.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(line) => {
                let hit = moment.matches(&line, &mut counts);
                if line.starts_with("ack ") {
                    acks.push(line);
                }
                if hit {
                    signal(&child, "STOP");
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                signal(&child, "STOP");
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exited = true;
                break;
            }
        }
    }
    if exited {
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(format!("the worker failed ({status}): {err}"));
        }
        if let Moment::AfterExit(ms) = moment {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
    // The cut: what the device holds now.
    run_cmd(Command::new("cp").arg("--sparse=always").arg(&image).arg(&copy))?;
    signal(&child, "KILL");
    let _ = child.wait();
    // Acknowledgements printed before the stop but not yet read are acknowledgements too.
    let _ = reader.join();
    acks.extend(rx.try_iter().filter(|l| l.starts_with("ack ")));
    drop(live);
    let acks_file = dir.join("acks.txt");
    std::fs::write(&acks_file, acks.join("\n")).map_err(|e| e.to_string())?;
    let after = Mounted::new(&copy, &dir.join("after"))?;
    let out = Command::new(&cfg.worker)
        .arg("check")
        .arg("--db")
        .arg(after.dir.join("db"))
        .arg("--acks")
        .arg(&acks_file)
        .output()
        .map_err(|e| e.to_string())?;
    drop(after);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut violations: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("violation: "))
        .map(|v| format!("cut {index} ({moment:?}, seed {seed}): {v}"))
        .collect();
    if !out.status.success() && violations.is_empty() {
        violations.push(format!(
            "cut {index} ({moment:?}): the checker failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if violations.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        // Kept with the image and the acknowledgements, to look at.
        let _ = std::fs::write(dir.join("check.log"), [&out.stdout[..], &out.stderr[..]].concat());
    }
    let slots = stdout.lines().find_map(|l| l.strip_prefix("slots ")?.parse().ok()).unwrap_or(0);
    Ok((acks.len(), violations, slots))
}

/// Runs `cfg.cuts` cuts, printing a line per cut.
pub fn run(cfg: &Config) -> Result<Summary, String> {
    preflight()?;
    let mut rng = cfg.seed;
    let mut summary = Summary::default();
    let bar = if cfg.progress {
        let bar = indicatif::ProgressBar::new(cfg.cuts as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} cuts (eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    for i in 0..cfg.cuts {
        let m = moment(i, &mut rng);
        let (acks, violations, slots) = cut(cfg, i, m)?;
        summary.slots += slots;
        let line =
            format!("cut {i}: {m:?}: {acks} acknowledgements, {} violations", violations.len());
        if bar.is_hidden() {
            println!("{line}")
        } else {
            bar.println(line)
        }
        bar.inc(1);
        summary.cuts += 1;
        summary.acks += acks;
        summary.violations.extend(violations);
    }
    Ok(summary)
}

/// The worker example, built for the running executable's profile first.
pub fn worker() -> PathBuf {
    built::example("powercut")
}

pub use built::scratch;
