//! Any bytes, arriving on either port of a two-pod node, through the whole pipeline.
#![no_main]
use std::time::Instant;

use dataplane::packet::{Batch, Meta};
use dataplane::pipeline::Pipeline;
use dataplane::route::Route;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&port, frame)) = data.split_first() else { return };
    let mut p = Pipeline::new(
        [10, 244, 1, 1].into(),
        vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]],
        &[
            Route { prefix: [10, 244, 1, 10].into(), len: 32, port: 0, via: None },
            Route { prefix: [10, 244, 1, 11].into(), len: 32, port: 1, via: None },
        ],
    );
    let mut batch = Batch::new(1);
    let mut local = Batch::new(4);
    batch.push_copy(frame, Meta { in_port: u16::from(port & 1), ..Meta::default() });
    p.process(&mut batch, &mut local, Instant::now());
});
