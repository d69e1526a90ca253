//! The component's allocator: wasi-libc's `malloc` (dlmalloc) behind a
//! free list per size class for small blocks.
//!
//! A request allocates a few small blocks and frees them all before it
//! ends (the request's target, a cache key, the strings of its response,
//! freed by the post-return call). dlmalloc took some 170 instructions a
//! `malloc` or `free` compiled to WebAssembly, a fifth of a cache hit's
//! code in the component (BENCHMARKS.md, "a tenth run"); a free list's
//! pop or push is a few loads and stores. A freed small block goes to its class's list, never
//! back to dlmalloc, so that the lists hold at most as many blocks as
//! were ever in use at once: a warm instance (instance reuse) finds its
//! blocks there and its memory never grows after its first requests.
//! Large or over-aligned blocks go to dlmalloc as before.
//!
//! Components have one thread (`wasm32-wasip2` has none to start), which
//! is what makes the unsynchronized lists sound; `GlobalAlloc` requires
//! `Sync`, which is asserted for that reason. Private to the kit, so that
//! no multi-threaded program can make it its allocator; a build with
//! threads is refused.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Class `n` holds blocks of `(n + 1) * STEP` bytes.
const STEP: usize = 16;
/// Size classes: blocks of up to `CLASSES * STEP` bytes.
const CLASSES: usize = 16;

#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
compile_error!("SmallBlocks assumes one thread; this build has wasm threads");

/// `System` with a free list per size class for small blocks.
pub(crate) struct SmallBlocks {
    /// The first free block of each class; each free block holds a pointer
    /// to the next.
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: only a component, which has one thread, uses it as its global
// allocator (`lib.rs`, wasm32 only); tests use one per thread.
unsafe impl Sync for SmallBlocks {}

impl SmallBlocks {
    pub(crate) const fn new() -> Self {
        Self {
            free: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }
}

/// The size class of a block of `layout`, if it is a small one.
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size();
    (size <= CLASSES * STEP && layout.align() <= STEP).then(|| size.saturating_sub(1) / STEP)
}

/// The layout every block of `class` is allocated with.
fn class_layout(class: usize) -> Layout {
    // A multiple of STEP, a power of two: always a valid layout.
    Layout::from_size_align((class + 1) * STEP, STEP).expect("a size class's layout")
}

unsafe impl GlobalAlloc for SmallBlocks {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class(layout) else {
            // SAFETY: the caller's layout, as given.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: one thread (see `Sync`), and no other borrow of the
        // lists lives across this call.
        let head = unsafe { &mut (*self.free.get())[class] };
        if head.is_null() {
            // SAFETY: a valid layout of non-zero size.
            return unsafe { System.alloc(class_layout(class)) };
        }
        let block = *head;
        // SAFETY: a free block of this class holds the next one's address
        // in its first bytes (STEP-aligned, so aligned for a pointer).
        *head = unsafe { block.cast::<*mut u8>().read() };
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class(layout) else {
            // SAFETY: allocated by `System` with this layout (`alloc`).
            return unsafe { System.dealloc(block, layout) };
        };
        // SAFETY: as in `alloc`; the block is at least STEP bytes, room
        // for the pointer it now holds, and no longer in use.
        unsafe {
            let head = &mut (*self.free.get())[class];
            block.cast::<*mut u8>().write(*head);
            *head = block;
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc::realloc`'s contract: `new_size` with the
        // old alignment is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            // The block already has room: small blocks are allocated whole.
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: both large: `System`'s own, with the caller's layout.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: a valid layout; the copy is within both blocks.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_blocks_are_reused_by_class_and_large_ones_pass_through() {
        let a = SmallBlocks::new();
        let small = Layout::from_size_align(24, 8).unwrap();
        let same_class = Layout::from_size_align(32, 4).unwrap();
        let large = Layout::from_size_align(4096, 8).unwrap();
        unsafe {
            let x = a.alloc(small);
            x.write_bytes(0xAB, 24);
            a.dealloc(x, small);
            assert_eq!(a.alloc(same_class), x, "a freed block is its class's next");
            let y = a.alloc(small);
            assert_ne!(x, y, "a block in use is not handed out again");
            // Grown within its class: the same block; past it: moved, with
            // its bytes.
            y.write_bytes(7, 24);
            assert_eq!(a.realloc(y, small, 30), y);
            let z = a.realloc(y, small, 100);
            assert_ne!(z, y);
            assert_eq!(std::slice::from_raw_parts(z, 24), &[7; 24]);
            assert_eq!(a.alloc(small), y, "the block it left is free");
            let big = a.alloc(large);
            big.write_bytes(1, 4096);
            let bigger = a.realloc(big, large, 8192);
            assert_eq!(*bigger.add(4095), 1);
            a.dealloc(bigger, Layout::from_size_align(8192, 8).unwrap());
            let over_aligned = Layout::from_size_align(16, 64).unwrap();
            let o = a.alloc(over_aligned);
            assert_eq!(
                o as usize % 64,
                0,
                "over-aligned blocks keep their alignment"
            );
            a.dealloc(o, over_aligned);
        }
    }

    #[test]
    fn classes_cover_every_small_size() {
        assert_eq!(class(Layout::from_size_align(1, 1).unwrap()), Some(0));
        assert_eq!(class(Layout::from_size_align(16, 8).unwrap()), Some(0));
        assert_eq!(class(Layout::from_size_align(17, 8).unwrap()), Some(1));
        assert_eq!(class(Layout::from_size_align(256, 16).unwrap()), Some(15));
        assert_eq!(class(Layout::from_size_align(257, 8).unwrap()), None);
        assert_eq!(class(Layout::from_size_align(8, 32).unwrap()), None);
    }
}
