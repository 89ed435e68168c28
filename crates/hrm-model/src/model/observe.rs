//! Observers of a forward pass: what the model shows of its intermediate tensors, and the
//! parity [`Trace`] built on it.

use candle_core::Tensor;

/// An intermediate tensor of a forward, as it is shown to an [`Observer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The input encoding x̃ `[B, S, D]` of an ACT step.
    InputEmbeddings,
    /// A part of block `layer` of a module call, `[B, S, D]`: `"attn"` (attention output after
    /// o_proj), `"mlp"` (SwiGLU output after down_proj) or `"out"` (the block's output).
    Block {
        /// H module (else L).
        h_level: bool,
        /// Block index.
        layer: usize,
        /// `"attn"`, `"mlp"` or `"out"`.
        part: &'static str,
    },
    /// The output z `[B, S, D]` of a reasoning-module call (z_L after an L call, z_H after an H
    /// call), in call order.
    Module {
        /// H module (else L).
        h_level: bool,
    },
}

/// Receives the intermediate tensors of a forward. The inference paths build a tensor for an
/// event only when [`Observer::wants`] says so.
pub trait Observer {
    /// Whether `event` should be shown (default: every event).
    fn wants(&self, event: &Event) -> bool {
        let _ = event;
        true
    }
    /// The tensor of `event` (detached).
    fn observe(&mut self, event: Event, t: &Tensor);
}

/// No observer: nothing is wanted.
impl Observer for () {
    fn wants(&self, _: &Event) -> bool {
        false
    }
    fn observe(&mut self, _: Event, _: &Tensor) {}
}

/// Recorded intermediate tensors of a forward, named as the parity fixtures name them:
/// `input_embeddings`, `call<i>.L` / `call<i>.H` for every module call, and
/// `call0.layer0.{attn,mlp,out}` for the first block of the first call.
#[derive(Debug, Default)]
pub struct Trace {
    /// `(name, tensor)` in call order.
    pub entries: Vec<(String, Tensor)>,
    calls: usize,
}

impl Observer for Trace {
    fn wants(&self, event: &Event) -> bool {
        match event {
            Event::Block { layer, .. } => self.calls == 0 && *layer == 0,
            _ => true,
        }
    }

    fn observe(&mut self, event: Event, t: &Tensor) {
        if !self.wants(&event) {
            return;
        }
        let name = match event {
            Event::InputEmbeddings => "input_embeddings".to_string(),
            Event::Block { part, .. } => format!("call0.layer0.{part}"),
            Event::Module { h_level } => {
                self.calls += 1;
                format!("call{}.{}", self.calls - 1, if h_level { "H" } else { "L" })
            }
        };
        self.entries.push((name, t.detach()));
    }
}
