//! A phone that the crash test kills with SIGKILL at an arbitrary instant. It prints the number
//! of each step once that step is durable on the device, so the test knows what must survive.
//!
//! `device_crash DIR BASE edit CUSTOMER START`: appends `[tN]` to the customer's notes, forever.
//! `device_crash DIR BASE sync CUSTOMER START`: logs a follow-up (location `step N`), then syncs,
//! forever (so the kill often lands in the middle of a sync round).

use std::io::Write;

use outpost_mobile::DocumentId;
use outpost_mobile::device::Device;
use outpost_mobile::records::customer::Customer;
use outpost_mobile::records::follow_up::FollowUp;
use outpost_mobile::records::set_text;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, base, mode, customer, start] = args.as_slice() else {
        eprintln!("usage: device_crash DIR BASE edit|sync CUSTOMER START");
        std::process::exit(2);
    };
    let customer = DocumentId::parse(customer).expect("a document id");
    let mut step: u64 = start.parse().expect("a number");
    let mut device = Device::open(dir, base).expect("the store opens");
    let mut out = std::io::stdout();
    loop {
        match mode.as_str() {
            "edit" => {
                device
                    .update::<Customer>(&customer, |c| {
                        let notes = format!("{}[t{step}]", c.notes.as_str());
                        set_text(&mut c.notes, &notes);
                    })
                    .expect("the edit is saved");
            }
            "sync" => {
                let mut visit = FollowUp::new(customer.to_string(), "call", "2026-11-27T03:00:00Z");
                visit.location = Some(format!("step {step}"));
                device.create(&visit).expect("the follow-up is saved");
            }
            other => panic!("unknown mode {other}"),
        }
        writeln!(out, "{step}").expect("stdout");
        out.flush().expect("stdout");
        if mode == "sync" {
            device.sync().await.expect("the round completes");
        }
        step += 1;
    }
}
