//! Batching: the points of a map become as few reads as the protocol allows. Points of one
//! table whose addresses are close (at most `max_gap` unused registers between them) share a
//! read, up to 125 registers or 2000 bits per read (the Modbus limits for functions 1-4).
//! Registers skipped inside a read are read and ignored; a device that answers such a read
//! with "illegal data address" is retried point by point (see `poll`), so a gap in its
//! register space costs requests, never values.

use super::map::{Point, Table};

/// One request: `count` items of `table` from `start`, feeding the listed points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Indexes into the map's points.
    pub points: Vec<usize>,
}

impl Read {
    /// Where it is, for messages: `input 0..=79`.
    pub fn location(&self) -> String {
        format!(
            "{} {}..={}",
            self.table.as_str(),
            self.start,
            u32::from(self.start) + u32::from(self.count) - 1
        )
    }
}

/// The reads covering every point, in table then address order.
pub fn plan(points: &[Point], max_gap: u16) -> Vec<Read> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].table, points[i].address, points[i].end()));
    let mut reads: Vec<Read> = Vec::new();
    for i in order {
        let p = &points[i];
        let (start, end) = (u32::from(p.address), u32::from(p.end()));
        if let Some(r) = reads.last_mut() {
            let r_end = u32::from(r.start) + u32::from(r.count) - 1;
            let new_end = r_end.max(end);
            let fits = new_end - u32::from(r.start) < u32::from(p.table.max_per_read());
            if r.table == p.table && start <= r_end + 1 + u32::from(max_gap) && fits {
                r.count = (new_end - u32::from(r.start) + 1) as u16;
                r.points.push(i);
                continue;
            }
        }
        reads.push(Read {
            table: p.table,
            start: p.address,
            count: (end - start + 1) as u16,
            points: vec![i],
        });
    }
    reads
}

/// One read per point, for a device that rejects a batched read.
pub fn single(points: &[Point], read: &Read) -> Vec<Read> {
    read.points
        .iter()
        .map(|&i| Read {
            table: points[i].table,
            start: points[i].address,
            count: points[i].count(),
            points: vec![i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::modbus::map::RegisterMap;
    use proptest::prelude::*;
    use std::path::Path;

    fn points(spec: &[(&str, u32, &str)]) -> Vec<Point> {
        let mut text = String::new();
        for (n, (table, addr, ty)) in spec.iter().enumerate() {
            text.push_str(&format!(
                "[[point]]\nmeasurement = \"m\"\nfield = \"f{n}\"\ntable = \"{table}\"\naddress = {addr}\ntype = \"{ty}\"\n"
            ));
        }
        RegisterMap::parse(&text, Path::new("t.toml"))
            .unwrap()
            .points
    }

    #[test]
    fn adjacent_points_share_a_read_and_tables_do_not_mix() {
        let p = points(&[
            ("input", 0, "float32"),
            ("input", 2, "float32"),
            ("input", 6, "float32"),
            ("holding", 0, "uint16"),
            ("coil", 0, "bool"),
            ("coil", 1, "bool"),
        ]);
        let r = plan(&p, 2);
        assert_eq!(
            r,
            vec![
                Read {
                    table: Table::Coil,
                    start: 0,
                    count: 2,
                    points: vec![4, 5]
                },
                Read {
                    table: Table::Holding,
                    start: 0,
                    count: 1,
                    points: vec![3]
                },
                Read {
                    table: Table::Input,
                    start: 0,
                    count: 8,
                    points: vec![0, 1, 2]
                },
            ]
        );
        // With no gap allowed, the hole at 4..=5 splits the input read.
        let r = plan(&p, 0);
        assert_eq!(r.len(), 4);
        assert_eq!((r[2].start, r[2].count), (0, 4));
        assert_eq!((r[3].start, r[3].count), (6, 2));
    }

    #[test]
    fn reads_stop_at_the_protocol_limits() {
        let regs: Vec<(&str, u32, &str)> = (0..100).map(|i| ("input", i * 2, "float32")).collect();
        let r = plan(&points(&regs), 0);
        assert_eq!(r.iter().map(|r| r.count).collect::<Vec<_>>(), vec![124, 76]);
        let bits: Vec<(&str, u32, &str)> = (0..2500).map(|i| ("discrete", i, "bool")).collect();
        let r = plan(&points(&bits), 0);
        assert_eq!(
            r.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![2000, 500]
        );
    }

    #[test]
    fn the_last_address_is_reachable() {
        let r = plan(
            &points(&[("holding", 65534, "uint16"), ("holding", 65535, "uint16")]),
            5,
        );
        assert_eq!(
            r,
            vec![Read {
                table: Table::Holding,
                start: 65534,
                count: 2,
                points: vec![0, 1]
            }]
        );
        assert_eq!(r[0].location(), "holding 65534..=65535");
    }

    proptest! {
        #[test]
        fn every_point_is_read_once_within_limits(
            addrs in prop::collection::btree_set(0u32..600, 1..80),
            gap in 0u16..20,
        ) {
            // uint16 points on distinct registers, so no overlaps.
            let spec: Vec<(&str, u32, &str)> = addrs.iter().map(|&a| ("holding", a, "uint16")).collect();
            let p = points(&spec);
            let reads = plan(&p, gap);
            let mut seen = vec![0; p.len()];
            for r in &reads {
                prop_assert!(r.count >= 1 && r.count <= 125);
                for &i in &r.points {
                    seen[i] += 1;
                    prop_assert!(p[i].address >= r.start);
                    prop_assert!(u32::from(p[i].end()) < u32::from(r.start) + u32::from(r.count));
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
