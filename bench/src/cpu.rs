//! A function process's CPU time, and pinning it to one core.

use std::time::Duration;

/// The time the process `pid` has spent on a CPU: the first field of every thread's
/// `/proc/<pid>/task/<tid>/schedstat` (nanoseconds), summed. Threads come and go; one that ended
/// between two readings takes its time with it, so a difference is clamped at zero by the
/// caller. `None` when the process is gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total: u64 = 0;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread ended while we listed them
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(total))
}

/// The process's user and system CPU time so far, in clock ticks (`/proc/<pid>/stat` fields 14
/// and 15, all threads): coarse (10 ms a tick), so only read around a long series, for the share
/// of CPU time spent in the kernel.
pub fn user_and_system_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

/// Runs the command's process (and every thread it starts) on `cpu` only.
pub fn pin_to_cpu(command: &mut tokio::process::Command, cpu: usize) {
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // sched_setaffinity, which is async-signal-safe, on a set built on its own stack.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
