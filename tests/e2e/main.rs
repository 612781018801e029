//! End-to-end scenarios: the real virtdns binary against real DNS servers and clients, with
//! dnsmasq 2.90 as the reference it replaces. Everything runs inside a private network
//! namespace this binary creates for itself (see `lab`), each scenario on its own loopback
//! subnet. `cargo test --test e2e -- NAME` runs the scenarios whose name contains NAME.

mod clients;
mod dhcp_noise;
mod guests;
mod lab;
mod libvirtd;
mod noise;
mod peers;
mod scenarios;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

fn main() {
    if dhcp_noise::run_if_asked() {
        return;
    }
    lab::enter_namespace();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<_> = scenarios::ALL
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| {
            filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
        })
        .collect();
    println!("running {} end-to-end scenarios", selected.len());
    let (mut passed, mut failed, mut skipped) = (0, Vec::new(), 0);
    let quiet_skips = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<lab::Skipped>().is_none() {
            quiet_skips(info);
        }
    }));
    for (index, (name, scenario)) in selected {
        let started = Instant::now();
        let mut lab = lab::Lab::new(index, name);
        let result = catch_unwind(AssertUnwindSafe(|| scenario(&mut lab)));
        match result {
            Ok(()) => {
                lab.discard();
                lab::record_outcome(name, lab::Outcome::Passed);
                passed += 1;
                println!(
                    "test {name} ... ok ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(payload) => match payload.downcast::<lab::Skipped>() {
                Ok(reason) => {
                    lab.discard();
                    lab::record_outcome(name, lab::Outcome::Skipped(reason.0.clone()));
                    skipped += 1;
                    println!("test {name} ... skipped: {}", reason.0);
                }
                Err(_) => {
                    lab::record_outcome(name, lab::Outcome::Failed);
                    println!(
                        "test {name} ... FAILED (its files: {})\n{}",
                        lab.dir().display(),
                        lab.logs()
                    );
                    failed.push(*name);
                }
            },
        }
    }
    println!();
    if !failed.is_empty() {
        println!("failures: {}", failed.join(", "));
    }
    println!(
        "{passed} passed, {} failed, {skipped} skipped",
        failed.len()
    );
    std::process::exit(i32::from(!failed.is_empty()));
}
