//! Wire formats, in the style of smoltcp: a zero-copy view per structure
//! (checked constructor, then panic-free field accessors) and an owned
//! representation that parses from and emits into a view.

pub mod frame;
pub mod heartbeat;
pub mod sync;
