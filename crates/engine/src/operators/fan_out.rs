//! `fan_out2`, `fan_out3`, `fan_out4`: one pass over each record, into several streams.
//!
//! A stream read by several operators hands each of them its own copy of every container. When
//! each reader only needs part of a record (a few fields, or only some records), one fan-out
//! reads each record once and writes each stream only what it needs.

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::progress::operate::FrontierInterest;

use crate::dstream::{DStream, Data};

/// Room to reserve for an output of a container of `len` records, when the last container held
/// `last` records and gave that output `given`: as many records per input record as then (a
/// quarter more where that was fewer than one each), but never more than twice what the last
/// container gave or the container's own length, whichever is more, so that one odd container
/// cannot make the next reserve far more than it needs.
fn expected(len: usize, last: usize, given: usize) -> usize {
    if last == 0 {
        return given;
    }
    let expected = len.saturating_mul(given).div_ceil(last);
    let expected = if given >= last {
        expected
    } else {
        expected + expected / 4
    };
    expected.min(given.saturating_mul(2).max(len))
}

/// Defines `DStream::$name`, a fan-out into one stream per `($type, $buffer, $output, $stream)`.
macro_rules! fan_out {
    ($(#[$doc:meta])* $name:ident: $(($ty:ident, $buf:ident, $out:ident, $stream:ident)),+) => {
        impl<'s, T: Data> DStream<'s, T> {
            $(#[$doc])*
            pub fn $name<$($ty: Data),+>(
                &self,
                mut f: impl FnMut(T, $(&mut Vec<$ty>),+) + 'static,
            ) -> ($(DStream<'s, $ty>),+) {
                let mut builder =
                    OperatorBuilder::new(stringify!($name).to_owned(), self.stream.scope());
                let mut input = builder.new_input(self.stream.clone(), Pipeline);
                builder.set_notify_for(0, FrontierInterest::Never);
                $(let (mut $out, $stream) = builder.new_output::<Vec<$ty>>();)+
                builder.build(move |_capabilities| {
                    // Each output's buffer and how many records it took from the last container.
                    $(let mut $buf: (Vec<$ty>, usize) = (Vec::new(), 0);)+
                    // How many records the last container held.
                    let mut last = 0;
                    move |_frontiers| {
                        $(let mut $out = $out.activate();)+
                        input.for_each_time(|time, containers| {
                            for container in containers {
                                // `give` usually takes the buffer and leaves an empty one: size
                                // it once instead of growing it record by record, for as many
                                // records per input record as the last container gave (a
                                // quarter more where that was fewer than one each), since
                                // containers differ in length.
                                let len = container.len();
                                if len == 0 {
                                    continue;
                                }
                                $($buf.0.reserve(expected(len, last, $buf.1));)+
                                for record in container.drain(..) {
                                    f(record, $(&mut $buf.0),+);
                                }
                                last = len;
                                $($buf.1 = $buf.0.len();
                                $out.give(&time, &mut $buf.0);
                                // `give` may leave another container's records behind.
                                $buf.0.clear();)+
                            }
                        });
                    }
                });
                ($(self.derive($stream)),+)
            }
        }
    };
}

fan_out!(
    /// Reads each record once and hands it to `f` with one buffer per output stream: what `f`
    /// pushes to a buffer goes to that stream, in the same batch. Records stay on their worker.
    ///
    /// # Examples
    /// ```
    /// use clickpulse_engine::testing::collect;
    /// let out = collect(2, vec![vec![1, 2, 3, 4]], |s| {
    ///     let (odd, halves) = s.fan_out2(|x: i32, odd: &mut Vec<i32>, halves: &mut Vec<String>| {
    ///         if x % 2 == 1 {
    ///             odd.push(x);
    ///         } else {
    ///             halves.push(format!("{}", x / 2));
    ///         }
    ///     });
    ///     odd.union(&halves.map(|h| h.parse::<i32>().unwrap() * 100))
    /// })
    /// .unwrap();
    /// assert_eq!(out, vec![vec![1, 3, 100, 200]]);
    /// ```
    fan_out2: (A, a, out_a, stream_a), (B, b, out_b, stream_b)
);

fan_out!(
    /// As [`DStream::fan_out2`], into three streams.
    fan_out3: (A, a, out_a, stream_a), (B, b, out_b, stream_b), (C, c, out_c, stream_c)
);

fan_out!(
    /// As [`DStream::fan_out2`], into four streams.
    fan_out4: (A, a, out_a, stream_a), (B, b, out_b, stream_b), (C, c, out_c, stream_c),
        (D, d, out_d, stream_d)
);

#[cfg(test)]
mod tests {
    use super::expected;

    #[test]
    fn reservations_follow_the_last_ratio_within_bounds() {
        // One record out per record in: exactly the container's length.
        assert_eq!(expected(120, 100, 100), 120);
        // Half: half the length, and a quarter more.
        assert_eq!(expected(120, 100, 50), 75);
        // Nothing last time, or no last container: nothing reserved.
        assert_eq!(expected(120, 100, 0), 0);
        assert_eq!(expected(120, 0, 0), 0);
        // Many out per record in, from a one-record container: capped at the container's length
        // or twice the last output, not a thousand times the length.
        assert_eq!(expected(4096, 1, 1000), 4096);
        assert_eq!(expected(10, 1, 1000), 2000);
        // Several per record in: as many as then, up to the cap.
        assert_eq!(expected(100, 100, 300), 300);
        assert_eq!(expected(1000, 100, 300), 1000);
        // Huge lengths saturate instead of overflowing.
        assert_eq!(expected(usize::MAX, 2, 3), usize::MAX / 2 + 1);
    }
}
