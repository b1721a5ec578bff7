//! Graphs from stream capture: the captured work in order (one stream, so a chain), instantiated and replayed by
//! `cuGraphLaunch`. Allocation nodes own graph memory reserved at capture: the buffer is mapped when the node runs
//! and unmapped by its free node, so a captured kernel that reads memory the graph has freed faults.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::memory;
use crate::status::{CUresult, Fault};
use crate::stream::{next_id, Stream};
use crate::work::Work;

/// Graph memory reserved by one capture; released when no graph or executable graph refers to it any more.
pub struct GraphAllocations(Vec<usize>);

impl GraphAllocations {
    pub fn new(ptrs: Vec<usize>) -> Arc<Self> {
        Arc::new(Self(ptrs))
    }
}

impl Drop for GraphAllocations {
    fn drop(&mut self) {
        for &p in &self.0 {
            memory::release_graph(p);
        }
    }
}

/// A captured graph (also what an executable graph replays).
#[derive(Clone)]
pub struct Graph {
    pub nodes: Arc<Vec<Work>>,
    pub allocations: Arc<GraphAllocations>,
}

#[derive(Default)]
struct Registry {
    graphs: HashMap<u64, Graph>,
    execs: HashMap<u64, Graph>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<Registry>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(registry().get_or_insert_with(Registry::default))
}

fn invalid(what: &str) -> Fault {
    Fault::new(
        CUresult::CUDA_ERROR_INVALID_HANDLE,
        format!("not a live {what}"),
    )
}

pub fn add_graph(g: Graph) -> u64 {
    let id = next_id();
    with(|r| r.graphs.insert(id, g));
    id
}

pub fn destroy_graph(id: u64) -> Result<(), Fault> {
    with(|r| {
        r.graphs
            .remove(&id)
            .map(drop)
            .ok_or_else(|| invalid("graph"))
    })
}

pub fn instantiate(graph: u64) -> Result<u64, Fault> {
    let g = with(|r| r.graphs.get(&graph).cloned()).ok_or_else(|| invalid("graph"))?;
    let id = next_id();
    with(|r| r.execs.insert(id, g));
    Ok(id)
}

pub fn destroy_exec(id: u64) -> Result<(), Fault> {
    with(|r| {
        r.execs
            .remove(&id)
            .map(drop)
            .ok_or_else(|| invalid("executable graph"))
    })
}

/// Queues a replay of executable graph `exec` on `stream`: its nodes in captured order, as one piece of work.
pub fn launch(exec: u64, stream: &Arc<Stream>) -> Result<(), Fault> {
    let g = with(|r| r.execs.get(&exec).cloned()).ok_or_else(|| invalid("executable graph"))?;
    if stream.capture_state().0 {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_NOT_SUPPORTED,
            "launching a graph into a capturing stream (child graphs are not modelled)",
        ));
    }
    let n = g.nodes.len();
    stream.submit(Work::new(format!("graph launch ({n} nodes)"), move || {
        for (i, node) in g.nodes.iter().enumerate() {
            crate::fault::running(&node.label, || (node.run)())
                .and_then(|()| memory::check_canaries())
                .map_err(|f| {
                    Fault::new(
                        f.code,
                        format!("node {} of {n} ({}): {}", i + 1, node.label, f.detail),
                    )
                })?;
        }
        Ok(())
    }))?;
    Ok(())
}

/// Checks `exec` exists (`cuGraphUpload` maps graph memory at the first launch here, so it has nothing to do).
pub fn check_exec(exec: u64) -> Result<(), Fault> {
    with(|r| {
        r.execs
            .contains_key(&exec)
            .then_some(())
            .ok_or_else(|| invalid("executable graph"))
    })
}
