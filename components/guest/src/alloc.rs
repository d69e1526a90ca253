//! The components' allocator: Talc over a fixed arena in the module's own
//! memory, with the system allocator (wasi-libc's dlmalloc) behind it.
//!
//! A request's allocations are many and small (the request's strings, a
//! cache key, the response's headers), and dlmalloc was the guest's
//! largest cost on a cache hit (BENCHMARKS.md). Talc serves them faster.
//! The arena is a static, so it lies in the memory the instance starts
//! with: serving from it never grows memory, and a warm instance (instance
//! reuse) is retired only when a request really needed more. What does not
//! fit in the arena comes from dlmalloc, which grows memory as before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::MaybeUninit;

/// The arena's size: room for many requests' worth of small allocations.
const ARENA_BYTES: usize = 256 << 10;

static mut ARENA: [MaybeUninit<u8>; ARENA_BYTES] = [MaybeUninit::uninit(); ARENA_BYTES];

/// Talc over `ARENA`, claimed on its first allocation.
static SMALL: talc::wasm::WasmArenaTalc =
    // SAFETY: nothing but this allocator touches `ARENA`.
    unsafe { talc::wasm::new_wasm_arena_allocator(&raw mut ARENA) };

/// The arena first, the system allocator when it is full.
pub struct Allocator;

/// Whether `ptr` was allocated from the arena.
fn in_arena(ptr: *mut u8) -> bool {
    let start = (&raw const ARENA).cast::<u8>() as usize;
    (start..start + ARENA_BYTES).contains(&(ptr as usize))
}

// SAFETY: every block is freed and resized by the allocator it came from
// (`in_arena` tells them apart); both are `GlobalAlloc`s.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            let ptr = SMALL.alloc(layout);
            if ptr.is_null() {
                System.alloc(layout)
            } else {
                ptr
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the allocator it is given back to.
        unsafe {
            if in_arena(ptr) {
                SMALL.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on; a block that moves out
        // of the arena is copied, then freed where it came from.
        unsafe {
            if !in_arena(ptr) {
                return System.realloc(ptr, layout, new_size);
            }
            let moved = SMALL.realloc(ptr, layout, new_size);
            if !moved.is_null() {
                return moved;
            }
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let moved = System.alloc(new_layout);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                SMALL.dealloc(ptr, layout);
            }
            moved
        }
    }
}
