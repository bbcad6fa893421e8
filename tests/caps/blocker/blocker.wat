;; blocker: a WASI-granted dynlink cap that tries to block in the host.
;;
;; Hand-written against the canonical ABI (world `blocker` in wit/, built at
;; test time by tests/test_provider_limits.py; never committed as a binary).
;; `@WASI@` is replaced by `@` and a WASI 0.2.x version, like in wit/.
;;
;; Methods:
;;   now    ok(u64 LE): wasi:clocks/monotonic-clock.now (does not block)
;;   ready  subscribes for 60 s and asks pollable.ready (does not block):
;;          ok([0]) while not ready
;;   sleep  subscribes for 60 s, then [method]pollable.block: ok("woke")
;;          60 s later, unless the host refuses to block
;;   poll   subscribes for 60 s, then wasi:io/poll.poll([it]): ok("woke")
;;          60 s later, unless the host refuses to block
;;   other  err(bad-method("unknown method"))
;;
;; Return area of `result<list<u8>, error>`: see tests/caps/twomem/twomem.wat.
(module
  (import "wasi:io/poll@WASI@" "[method]pollable.ready" (func $ready (param i32) (result i32)))
  (import "wasi:io/poll@WASI@" "[method]pollable.block" (func $block (param i32)))
  (import "wasi:io/poll@WASI@" "poll" (func $poll (param i32 i32 i32)))
  (import "wasi:io/poll@WASI@" "[resource-drop]pollable" (func $drop (param i32)))
  (import "wasi:clocks/monotonic-clock@WASI@" "now" (func $now (result i64)))
  (import "wasi:clocks/monotonic-clock@WASI@" "subscribe-duration"
    (func $subscribe (param i64) (result i32)))

  (memory $mem 1)
  (export "memory" (memory $mem))

  (data (i32.const 16) "now")
  (data (i32.const 24) "ready")
  (data (i32.const 32) "sleep")
  (data (i32.const 40) "poll")
  (data (i32.const 48) "woke")
  (data (i32.const 64) "unknown method")

  (global $base i32 (i32.const 1024))
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (param $align i32) (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $need i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (local.set $need
          (i32.sub
            (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
            (memory.size)))
        (if (i32.eq (memory.grow (local.get $need)) (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func (export "cabi_realloc")
    (param $old i32) (param $old_size i32) (param $align i32) (param $new_size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (call $alloc (local.get $align) (local.get $new_size)))
    (if (local.get $old_size)
      (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
    (local.get $ptr))

  ;; Whether [ptr, ptr+len) equals the `nlen` bytes at `name`.
  (func $is (param $ptr i32) (param $len i32) (param $name i32) (param $nlen i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $len) (local.get $nlen)) (then (return (i32.const 0))))
    (block $differ
      (loop $next
        (br_if $differ (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.ne
              (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))
              (i32.load8_u (i32.add (local.get $name) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; ok(the `len` bytes at `ptr`).
  (func $ok (param $ret i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store8 (local.get $ret) (i32.const 0))
    (i32.store offset=4 (local.get $ret) (local.get $ptr))
    (i32.store offset=8 (local.get $ret) (local.get $len))
    (local.get $ret))

  (func $sixty_seconds (result i32)
    (call $subscribe (i64.const 60000000000)))

  (func (export "compose:dynlink/provider@0.1.0#invoke")
    (param $mptr i32) (param $mlen i32) (param $pptr i32) (param $plen i32) (result i32)
    (local $ret i32) (local $buf i32) (local $p i32)
    (local.set $ret (call $alloc (i32.const 4) (i32.const 16)))
    (if (call $is (local.get $mptr) (local.get $mlen) (i32.const 16) (i32.const 3))
      (then
        (local.set $buf (call $alloc (i32.const 8) (i32.const 8)))
        (i64.store (local.get $buf) (call $now))
        (return (call $ok (local.get $ret) (local.get $buf) (i32.const 8)))))
    (if (call $is (local.get $mptr) (local.get $mlen) (i32.const 24) (i32.const 5))
      (then
        (local.set $p (call $sixty_seconds))
        (local.set $buf (call $alloc (i32.const 1) (i32.const 1)))
        (i32.store8 (local.get $buf) (call $ready (local.get $p)))
        (call $drop (local.get $p))
        (return (call $ok (local.get $ret) (local.get $buf) (i32.const 1)))))
    (if (call $is (local.get $mptr) (local.get $mlen) (i32.const 32) (i32.const 5))
      (then
        (local.set $p (call $sixty_seconds))
        (call $block (local.get $p))
        (call $drop (local.get $p))
        (return (call $ok (local.get $ret) (i32.const 48) (i32.const 4)))))
    (if (call $is (local.get $mptr) (local.get $mlen) (i32.const 40) (i32.const 4))
      (then
        (local.set $p (call $sixty_seconds))
        ;; poll(list of one borrow): the list is the handle, stored in memory.
        (local.set $buf (call $alloc (i32.const 4) (i32.const 12)))
        (i32.store (local.get $buf) (local.get $p))
        (call $poll (local.get $buf) (i32.const 1) (i32.add (local.get $buf) (i32.const 4)))
        (call $drop (local.get $p))
        (return (call $ok (local.get $ret) (i32.const 48) (i32.const 4)))))
    (i32.store8 (local.get $ret) (i32.const 1))
    (i32.store8 offset=4 (local.get $ret) (i32.const 2))
    (i32.store offset=8 (local.get $ret) (i32.const 64))
    (i32.store offset=12 (local.get $ret) (i32.const 14))
    (local.get $ret))

  (func (export "cabi_post_compose:dynlink/provider@0.1.0#invoke") (param i32)
    (global.set $heap (global.get $base)))
)
