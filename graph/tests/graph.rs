//! Node kinds and graph operations, through the published snapshot.

mod common;

use common::{io, runtime};
use pollux_graph::nodes::{null::NullNode, passthru::PassthruNode, ram::RamNode};
use pollux_graph::{Graph, GraphError, IoError, IoOp};

const MIB: u64 = 1 << 20;

#[test]
fn ram_node_reads_back_what_was_written() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(4 * MIB, 512).unwrap(), &[])
        .unwrap();
    let root = g.add_root("r", "ram0").unwrap();
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    let (res, _) = io(&g, root, IoOp::Write, 4096, 8192, Some(data.clone()));
    res.unwrap();
    let (res, back) = io(&g, root, IoOp::Read, 4096, 8192, None);
    res.unwrap();
    assert_eq!(back, data);
    io(&g, root, IoOp::Flush, 0, 0, None).0.unwrap();
    // Write zeroes and discard read back as zeroes, including a range large
    // enough for the madvise path with unaligned edges.
    io(&g, root, IoOp::WriteZeroes, 4096, 4096, None).0.unwrap();
    let (_, back) = io(&g, root, IoOp::Read, 4096, 8192, None);
    assert!(back[..4096].iter().all(|b| *b == 0));
    assert_eq!(&back[4096..], &data[4096..]);
    let big: Vec<u8> = vec![0xAB; (2 * MIB) as usize];
    io(&g, root, IoOp::Write, 512, 2 * MIB, Some(big))
        .0
        .unwrap();
    io(&g, root, IoOp::Discard, 1024, 2 * MIB - 1024, None)
        .0
        .unwrap();
    let (_, back) = io(&g, root, IoOp::Read, 0, 2 * MIB + 512, None);
    assert!(back[512..1024].iter().all(|b| *b == 0xAB));
    assert!(back[1024..(2 * MIB) as usize].iter().all(|b| *b == 0));
    assert!(back[(2 * MIB) as usize..].iter().all(|b| *b == 0xAB));
    let st = g.node_stats("ram0").unwrap();
    assert_eq!(st.ops[IoOp::Write.as_index()], 2);
    assert_eq!(st.inflight, 0);
}

#[test]
fn null_node_reads_zeroes_and_drops_writes() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("null0", NullNode::new(MIB, 4096), &[]).unwrap();
    let root = g.add_root("r", "null0").unwrap();
    io(&g, root, IoOp::Write, 0, 4096, Some(vec![1; 4096]))
        .0
        .unwrap();
    // A buffer that is not zero: the read must zero it.
    let (res, back) = io(&g, root, IoOp::Read, 0, 4096, Some(vec![2; 4096]));
    res.unwrap();
    assert!(back.iter().all(|b| *b == 0));
}

/// `read_zeroes = false` (SPDK's null bdev): the read succeeds and leaves
/// the caller's buffer as it was.
#[test]
fn null_node_without_read_zeroes_leaves_the_buffer() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    let node = NullNode::new(MIB, 4096).with_read_zeroes(false);
    g.add_node("null0", node, &[]).unwrap();
    let root = g.add_root("r", "null0").unwrap();
    let (res, back) = io(&g, root, IoOp::Read, 0, 4096, Some(vec![5; 4096]));
    res.unwrap();
    assert!(back.iter().all(|b| *b == 5));
}

#[test]
fn out_of_range_and_misaligned_io_fail_cleanly() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 512).unwrap(), &[])
        .unwrap();
    g.add_node("null0", NullNode::new(MIB, 512), &[]).unwrap();
    for node in ["ram0", "null0"] {
        let root = g.add_root(&format!("r-{node}"), node).unwrap();
        let (res, _) = io(&g, root, IoOp::Read, MIB - 512, 1024, None);
        assert!(matches!(res, Err(IoError::OutOfRange { .. })), "{res:?}");
        let (res, _) = io(&g, root, IoOp::Write, u64::MAX - 511, 512, None);
        assert!(matches!(res, Err(IoError::OutOfRange { .. })), "{res:?}");
        let (res, _) = io(&g, root, IoOp::Read, 100, 512, None);
        assert!(matches!(res, Err(IoError::Misaligned { .. })), "{res:?}");
        let (res, _) = io(&g, root, IoOp::Discard, MIB, 512, None);
        assert!(matches!(res, Err(IoError::OutOfRange { .. })), "{res:?}");
    }
}

#[test]
fn filter_insert_and_remove_redirect_parents_and_roots() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    let geo = {
        g.add_node("ram0", RamNode::new(MIB, 512).unwrap(), &[])
            .unwrap();
        g.describe().nodes[0].geometry
    };
    let root = g.add_root("ns1", "ram0").unwrap();
    io(&g, root, IoOp::Write, 0, 512, Some(vec![9; 512]))
        .0
        .unwrap();

    g.insert_filter("ram0", "pt0", PassthruNode::new(geo))
        .unwrap();
    let info = g.describe();
    assert_eq!(info.roots[0].node, "pt0");
    let pt = info.nodes.iter().find(|n| n.name == "pt0").unwrap();
    assert_eq!(pt.children, vec!["ram0".to_string()]);
    // I/O now goes through the filter and still reaches the data.
    let (res, back) = io(&g, root, IoOp::Read, 0, 512, None);
    res.unwrap();
    assert_eq!(back, vec![9; 512]);
    assert_eq!(g.node_stats("pt0").unwrap().ops[0], 1);

    // A second filter above the first; the first's parent is now pt1.
    g.insert_filter("pt0", "pt1", PassthruNode::new(geo))
        .unwrap();
    // ram0 cannot be removed while referenced.
    let err = g.remove_node("ram0").unwrap_err();
    assert!(matches!(err, GraphError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("pt0"), "{err}");
    g.remove_filter("pt0").unwrap();
    let info = g.describe();
    let pt1 = info.nodes.iter().find(|n| n.name == "pt1").unwrap();
    assert_eq!(pt1.children, vec!["ram0".to_string()]);
    assert_eq!(info.roots[0].node, "pt1");
    g.remove_filter("pt1").unwrap();
    assert_eq!(g.describe().roots[0].node, "ram0");
    assert!(g.stats().nodes_closed >= 2);

    // Removal after the root is gone.
    g.remove_root("ns1").unwrap();
    g.remove_node("ram0").unwrap();
    assert!(g.describe().nodes.is_empty());
}

#[test]
fn replace_child_checks_edges_cycles_and_geometry() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("a", RamNode::new(MIB, 512).unwrap(), &[])
        .unwrap();
    g.add_node("b", RamNode::new(MIB, 512).unwrap(), &[])
        .unwrap();
    g.add_node("small", RamNode::new(MIB / 2, 512).unwrap(), &[])
        .unwrap();
    let geo = g.describe().nodes[0].geometry;
    g.add_node("p", PassthruNode::new(geo), &["a"]).unwrap();
    let root = g.add_root("r", "p").unwrap();
    io(&g, root, IoOp::Write, 0, 512, Some(vec![1; 512]))
        .0
        .unwrap();
    g.replace_child("p", "a", "b").unwrap();
    let (_, back) = io(&g, root, IoOp::Read, 0, 512, None);
    assert_eq!(back, vec![0; 512], "reads now come from b");
    assert!(matches!(
        g.replace_child("p", "a", "b"),
        Err(GraphError::NotAChild { .. })
    ));
    assert!(matches!(
        g.replace_child("p", "b", "small"),
        Err(GraphError::Geometry { .. })
    ));
    g.add_node("q", PassthruNode::new(geo), &["p"]).unwrap();
    assert!(matches!(
        g.replace_child("p", "b", "q"),
        Err(GraphError::Cycle { .. })
    ));
    assert!(matches!(
        g.add_node("p", NullNode::new(MIB, 512), &[]),
        Err(GraphError::NameExists(_))
    ));
    assert!(matches!(
        g.add_node("x", PassthruNode::new(geo), &[]),
        Err(GraphError::Children { .. })
    ));
    // Refused changes publish nothing.
    let gen = g.describe().generation;
    let _ = g.replace_child("p", "b", "q");
    assert_eq!(g.describe().generation, gen);
}

#[test]
fn filter_stacks_are_bounded() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("n", NullNode::new(MIB, 512), &[]).unwrap();
    let geo = g.describe().nodes[0].geometry;
    let mut below = "n".to_string();
    let mut err = None;
    for i in 0..pollux_graph::io::MAX_DEPTH + 1 {
        let name = format!("f{i}");
        match g.insert_filter(&below, &name, PassthruNode::new(geo)) {
            Ok(_) => below = name,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert_eq!(err, Some(GraphError::TooDeep));
}

/// An I/O through the deepest stack the graph allows: the path keeps its
/// first nodes in the `Io` and the rest in a box, and every node on it must
/// count the I/O and be unpinned once it completes, or its removal would
/// hang.
#[test]
fn io_through_the_deepest_stack_is_counted_and_unpinned_on_every_node() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("ram0", RamNode::new(MIB, 512).unwrap(), &[])
        .unwrap();
    let geo = g.node_geometry("ram0").unwrap();
    let root = g.add_root("r", "ram0").unwrap();
    let depth = pollux_graph::io::MAX_DEPTH;
    let mut below = "ram0".to_string();
    for i in 0..depth - 1 {
        let name = format!("f{i}");
        g.insert_filter(&below, &name, PassthruNode::new(geo))
            .unwrap();
        below = name;
    }
    io(&g, root, IoOp::Write, 512, 512, Some(vec![5; 512]))
        .0
        .unwrap();
    let (res, back) = io(&g, root, IoOp::Read, 512, 512, None);
    res.unwrap();
    assert_eq!(back, vec![5; 512]);
    let err = io(&g, root, IoOp::Read, MIB, 512, None).0;
    assert!(matches!(err, Err(IoError::OutOfRange { .. })), "{err:?}");
    for name in (0..depth - 1)
        .map(|i| format!("f{i}"))
        .chain(["ram0".to_string()])
    {
        let st = g.node_stats(&name).unwrap();
        assert_eq!(st.ops[IoOp::Write.as_index()], 1, "{name}");
        assert_eq!(st.ops[IoOp::Read.as_index()], 1, "{name}");
        assert_eq!(st.inflight, 0, "{name}");
    }
    // The range check fails at the top filter, before the I/O goes deeper.
    let top = format!("f{}", depth - 2);
    assert_eq!(g.node_stats(&top).unwrap().errors[IoOp::Read.as_index()], 1);
    for i in (0..depth - 1).rev() {
        g.remove_filter(&format!("f{i}")).unwrap();
    }
    g.remove_root("r").unwrap();
    g.remove_node("ram0").unwrap();
}

#[test]
fn unknown_root_fails_the_io() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    g.add_node("n", NullNode::new(MIB, 512), &[]).unwrap();
    let root = g.add_root("r", "n").unwrap();
    g.remove_root("r").unwrap();
    let (res, _) = io(&g, root, IoOp::Read, 0, 512, None);
    assert_eq!(res, Err(IoError::NoDevice));
}

#[test]
fn replace_node_swaps_a_node_in_place_under_its_name_parents_and_roots() {
    let rt = runtime(1);
    let g = Graph::new(rt.handle());
    for n in ["a", "b"] {
        g.add_node(n, RamNode::new(MIB, 512).unwrap(), &[]).unwrap();
    }
    let geo = g.node_geometry("a").unwrap();
    g.add_node("mid", PassthruNode::new(geo), &["a"]).unwrap();
    g.add_node("top", PassthruNode::new(geo), &["mid"]).unwrap();
    let root = g.add_root("r", "mid").unwrap();
    let ra = g.add_root("ra", "a").unwrap();
    io(&g, ra, IoOp::Write, 0, 512, Some(vec![7; 512]))
        .0
        .unwrap();
    // The same name now stands on b: the root and the parent follow.
    g.replace_node("mid", PassthruNode::new(geo), &["b"])
        .unwrap();
    let info = g.describe();
    let mid = info.nodes.iter().find(|n| n.name == "mid").unwrap();
    assert_eq!(mid.children, ["b"]);
    let top = info.nodes.iter().find(|n| n.name == "top").unwrap();
    assert_eq!(top.children, ["mid"]);
    assert_eq!(
        info.roots.iter().find(|r| r.name == "r").unwrap().node,
        "mid"
    );
    let (res, back) = io(&g, root, IoOp::Read, 0, 512, None);
    res.unwrap();
    assert!(back.iter().all(|b| *b == 0), "read went to the old child");
    // a is free again; a node of another size cannot take mid's place.
    g.remove_root("ra").unwrap();
    g.remove_node("a").unwrap();
    g.add_node("big", RamNode::new(2 * MIB, 512).unwrap(), &[])
        .unwrap();
    let big = g.node_geometry("big").unwrap();
    assert!(matches!(
        g.replace_node("mid", PassthruNode::new(big), &["big"]),
        Err(GraphError::Geometry { .. })
    ));
    assert!(matches!(
        g.replace_node("nope", PassthruNode::new(geo), &["b"]),
        Err(GraphError::NoSuchNode(_))
    ));
}
