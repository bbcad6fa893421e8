;; A tiny conservative mark-and-sweep GC with MicroPython's blind spot.
;;
;; Heap: 64 cells of 16 bytes at $heap: header (0 free, 1 used, 3 used and
;; marked), then three words the marker scans conservatively (the exports use
;; +4 as a "next" pointer and +8 as a value). Roots: only the words of the
;; shadow stack, [__stack_pointer, $stack_top), exactly like MicroPython's
;; gc_collect. Nothing here writes to the shadow stack, so without the spill
;; pass a list held only in wasm locals has no root at all.
;;
;; A freed cell is poisoned (next = -16, out of bounds; value = 0xdead) so a
;; dangling use traps or shows, and `alloc` collects when the heap is full,
;; then hands freed cells out again.
(module
  (global $__stack_pointer (export "sp") (mut i32) (i32.const 16384))
  (global $stack_top i32 (i32.const 16384))
  (global $heap i32 (i32.const 32768))
  (global $heap_end i32 (i32.const 33792))  ;; 64 cells
  (global $collections (export "collections") (mut i32) (i32.const 0))
  (global $freed (export "freed") (mut i32) (i32.const 0))
  (memory (export "memory") 1)
  (type $check (func (param i32) (result i32)))
  (table 1 funcref)
  (elem (i32.const 0) $check_list)
  (elem declare func $check_list)

  ;; Function 0, so that `call $churn_200` is the bytes 10 00 (see the
  ;; ref.as_non_null export below).
  (func $churn_200 (call $churn (i32.const 200)))

  ;; Is $p the address of an allocated cell? (A conservative GC's question.)
  (func $is_cell (param $p i32) (result i32)
    (if (i32.lt_u (local.get $p) (global.get $heap)) (then (return (i32.const 0))))
    (if (i32.ge_u (local.get $p) (global.get $heap_end)) (then (return (i32.const 0))))
    (if (i32.and (local.get $p) (i32.const 15)) (then (return (i32.const 0))))
    (i32.ne (i32.load (local.get $p)) (i32.const 0)))

  (func $mark (param $p i32)
    (if (i32.eqz (call $is_cell (local.get $p))) (then (return)))
    (if (i32.eq (i32.load (local.get $p)) (i32.const 3)) (then (return)))
    (i32.store (local.get $p) (i32.const 3))
    (call $mark (i32.load offset=4 (local.get $p)))
    (call $mark (i32.load offset=8 (local.get $p)))
    (call $mark (i32.load offset=12 (local.get $p))))

  (func $gc_collect (local $p i32)
    ;; Mark from every word of the shadow stack.
    (local.set $p (global.get $__stack_pointer))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $p) (global.get $stack_top)))
        (call $mark (i32.load (local.get $p)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $scan)))
    ;; Sweep: free and poison what is unmarked, unmark the rest.
    (local.set $p (global.get $heap))
    (loop $sweep
      (if (i32.eq (i32.load (local.get $p)) (i32.const 1))
        (then
          (i32.store (local.get $p) (i32.const 0))
          (i32.store offset=4 (local.get $p) (i32.const -16))
          (i32.store offset=8 (local.get $p) (i32.const 0xdead))
          (global.set $freed (i32.add (global.get $freed) (i32.const 1)))))
      (if (i32.eq (i32.load (local.get $p)) (i32.const 3))
        (then (i32.store (local.get $p) (i32.const 1))))
      (local.set $p (i32.add (local.get $p) (i32.const 16)))
      (br_if $sweep (i32.lt_u (local.get $p) (global.get $heap_end))))
    (global.set $collections (i32.add (global.get $collections) (i32.const 1))))

  ;; A cell (value, next); collects once when the heap is full. $next is
  ;; often the only reference to a whole list while the collection runs.
  (func $alloc (param $value i32) (param $next i32) (result i32) (local $p i32) (local $retried i32)
    (loop $again
      (local.set $p (global.get $heap))
      (loop $find
        (if (i32.eqz (i32.load (local.get $p)))
          (then
            (i32.store (local.get $p) (i32.const 1))
            (i32.store offset=4 (local.get $p) (local.get $next))
            (i32.store offset=8 (local.get $p) (local.get $value))
            (i32.store offset=12 (local.get $p) (i32.const 0))
            (return (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br_if $find (i32.lt_u (local.get $p) (global.get $heap_end))))
      (if (local.get $retried) (then unreachable))  ;; out of memory
      (local.set $retried (i32.const 1))
      (call $gc_collect)
      (br $again))
    unreachable)

  ;; $k short-lived cells: fills the heap (so alloc collects) and reuses
  ;; whatever a collection freed.
  (func $churn (param $k i32)
    (loop $more
      (drop (call $alloc (i32.const 0x5a5a) (i32.const 0)))
      (local.tee $k (i32.sub (local.get $k) (i32.const 1)))
      (br_if $more)))

  ;; A list of $n cells valued 0..n-1; the sum of a live one is n(n-1)/2.
  ;; Returned through $scrub, so that the only references left are the ones
  ;; the caller keeps.
  (func $make_list (param $n i32) (result i32) (local $head i32) (local $i i32)
    (loop $grow
      (local.set $head (call $alloc (local.get $i) (local.get $head)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $grow (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $head))

  ;; Zeroes the 2 KiB of shadow stack below the live frames. Finished frames
  ;; leave their spill slots behind there, and a stale slot holding the list
  ;; would keep it alive by luck (deeper calls overwrite them sooner or later
  ;; in a real program); without them, only live frames can root the list.
  (func $scrub (param $p i32) (result i32)
    (memory.fill (i32.sub (global.get $__stack_pointer) (i32.const 2048)) (i32.const 0) (i32.const 2048))
    (local.get $p))

  (func $sum_list (param $list i32) (result i32) (local $sum i32)
    (block $end
      (loop $walk
        (br_if $end (i32.eqz (local.get $list)))
        (local.set $sum (i32.add (local.get $sum) (i32.load offset=8 (local.get $list))))
        (local.set $list (i32.load offset=4 (local.get $list)))
        (br $walk)))
    (local.get $sum))

  ;; Churns, then sums the list: a freed list traps or sums wrong.
  (func $check_list (param $list i32) (result i32)
    (call $churn_200)
    (call $sum_list (local.get $list)))

  ;; The list lives in a local of this frame across collections deeper down.
  (func (export "list_in_local") (param $n i32) (result i32) (local $head i32)
    (local.set $head (call $scrub (call $make_list (local.get $n))))
    (call $churn_200)
    (call $sum_list (local.get $head)))

  ;; The list goes straight from one call's result to the next call's
  ;; parameter: only the callee's param holds it.
  (func (export "list_in_param") (param $n i32) (result i32)
    (call $check_list (call $scrub (call $make_list (local.get $n)))))

  ;; Tail calls: this frame is gone while the callee collects.
  (func (export "list_through_return_call") (param $n i32) (result i32) (local $head i32)
    (local.set $head (call $scrub (call $make_list (local.get $n))))
    (return_call $check_list (local.get $head)))

  (func (export "list_through_return_call_indirect") (param $n i32) (result i32) (local $head i32)
    (local.set $head (call $scrub (call $make_list (local.get $n))))
    (return_call_indirect (type $check) (local.get $head) (i32.const 0)))

;; The last two take a list made by the exported make_list, so that the
  ;; only call in them that can collect is the one the old walker missed.
  (export "make_list" (func $make_list))

  ;; ref.as_non_null (0xd4) has no immediate. A walker that reads one there
  ;; eats the `call` opcode after it (10 00: the LEB ends at 0x10, and 0x00
  ;; reads as `unreachable`), never sees the call that collects, concludes
  ;; this function cannot collect and leaves $list unspilled.
  (func (export "list_across_ref_as_non_null") (param $list i32) (result i32) (local $r funcref)
    (drop (call $scrub (i32.const 0)))
    (ref.as_non_null (ref.func $check_list))
    (call $churn_200)
    (local.set $r)
    (call $sum_list (local.get $list)))

  ;; br_on_null (0xd5) has a label. A walker that reads none decodes the
  ;; label 2 as `block`, takes the call's opcode for its block type and again
  ;; misses the call that collects.
  (func (export "list_across_br_on_null") (param $list i32) (result i32) (local $r funcref)
    (drop (call $scrub (i32.const 0)))
    (local.set $r (ref.func $check_list))
    (block $outer
      (block
        (block
          (br_on_null $outer (local.get $r))
          (call $churn_200)
          (local.set $r))))
    (call $sum_list (local.get $list)))
)
