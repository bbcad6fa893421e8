;; twomem: a dynlink cap whose core module has TWO linear memories.
;;
;; Hand-written against the canonical ABI of `compose:dynlink/provider@0.1.0`
;; (`wasm-tools component embed --dummy-names legacy wit/dynlink -w cap -t`
;; prints the signatures). Memory 0 is the canonical-ABI memory (exported as
;; "memory"; arguments and replies live there); memory 1 is a second,
;; private memory that only `grow2` touches. Built at test time by
;; tests/test_provider_limits.py; never committed as a binary.
;;
;; Methods (N = the payload's first byte, 1 when the payload is empty):
;;   grow1  memory.grow memory 0 by N pages
;;   grow2  memory.grow memory 1 by N pages
;;          both reply ok(u32 LE: that memory's size in pages afterwards), or
;;          err(limit-exceeded("grow failed")) when memory.grow returns -1
;;   sizes  ok(u32 LE pages of memory 0, u32 LE pages of memory 1)
;;   other  err(bad-method("unknown method"))
;;
;; Return area of `result<list<u8>, error>` (16 bytes, align 4):
;;   +0 u8 discriminant (0 ok, 1 err)
;;   ok:  +4 ptr, +8 len
;;   err: +4 u8 error case (denied 0, not-found 1, bad-method 2, trapped 3,
;;        limit-exceeded 4, bad-payload 5), +8 string ptr, +12 string len
(module
  (memory $mem 1)
  (memory $second 0)
  (export "memory" (memory $mem))

  ;; Static data: method names and messages (offsets are fixed below 1024).
  (data (memory $mem) (i32.const 16) "grow1")
  (data (memory $mem) (i32.const 32) "grow2")
  (data (memory $mem) (i32.const 48) "sizes")
  (data (memory $mem) (i32.const 64) "grow failed")
  (data (memory $mem) (i32.const 96) "unknown method")

  ;; A bump allocator above the static data; reset after every call.
  (global $base i32 (i32.const 1024))
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (param $align i32) (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $need i32)
    ;; ptr = align_up(heap, align)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    ;; grow memory 0 to hold [ptr, end)
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size $mem) (i32.const 16)))
      (then
        (local.set $need
          (i32.sub
            (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
            (memory.size $mem)))
        (if (i32.eq (memory.grow $mem (local.get $need)) (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func (export "cabi_realloc")
    (param $old i32) (param $old_size i32) (param $align i32) (param $new_size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (call $alloc (local.get $align) (local.get $new_size)))
    (if (local.get $old_size)
      (then (memory.copy $mem $mem (local.get $ptr) (local.get $old) (local.get $old_size))))
    (local.get $ptr))

  ;; Whether bytes [ptr, ptr+len) of memory 0 equal the 5-byte name at $name.
  (func $is (param $ptr i32) (param $len i32) (param $name i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $len) (i32.const 5)) (then (return (i32.const 0))))
    (block $differ
      (loop $next
        (br_if $differ
          (i32.ne
            (i32.load8_u $mem (i32.add (local.get $ptr) (local.get $i)))
            (i32.load8_u $mem (i32.add (local.get $name) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $i) (i32.const 5))))
      (return (i32.const 1)))
    (i32.const 0))

  ;; ok(bytes): `count` u32 words, the first two taken from $a and $b.
  (func $ok (param $ret i32) (param $count i32) (param $a i32) (param $b i32) (result i32)
    (local $buf i32)
    (local.set $buf (call $alloc (i32.const 4) (i32.shl (local.get $count) (i32.const 2))))
    (i32.store $mem (local.get $buf) (local.get $a))
    (if (i32.eq (local.get $count) (i32.const 2))
      (then (i32.store $mem offset=4 (local.get $buf) (local.get $b))))
    (i32.store8 $mem (local.get $ret) (i32.const 0))
    (i32.store $mem offset=4 (local.get $ret) (local.get $buf))
    (i32.store $mem offset=8 (local.get $ret) (i32.shl (local.get $count) (i32.const 2)))
    (local.get $ret))

  ;; err(case(message)) with a static message.
  (func $err (param $ret i32) (param $case i32) (param $msg i32) (param $len i32) (result i32)
    (i32.store8 $mem (local.get $ret) (i32.const 1))
    (i32.store8 $mem offset=4 (local.get $ret) (local.get $case))
    (i32.store $mem offset=8 (local.get $ret) (local.get $msg))
    (i32.store $mem offset=12 (local.get $ret) (local.get $len))
    (local.get $ret))

  (func (export "compose:dynlink/provider@0.1.0#invoke")
    (param $mptr i32) (param $mlen i32) (param $pptr i32) (param $plen i32) (result i32)
    (local $ret i32) (local $n i32) (local $got i32)
    (local.set $ret (call $alloc (i32.const 4) (i32.const 16)))
    (local.set $n (i32.const 1))
    (if (local.get $plen)
      (then (local.set $n (i32.load8_u $mem (local.get $pptr)))))
    (if (call $is (local.get $mptr) (local.get $mlen) (i32.const 16))
      (then
        (local.set $got (memory.grow $mem (local.get $n)))
        (if (i32.eq (local.get $got) (i32.const -1))
          (then (return (call $err (local.get $ret) (i32.const 4) (i32.const 64) (i32.const 11)))))
        (return (call $ok (local.get $ret) (i32.const 1) (memory.size $mem) (i32.const 0)))))
    (if (call $is (local.get $mptr) (local.get $mlen) (i32.const 32))
      (then
        (local.set $got (memory.grow $second (local.get $n)))
        (if (i32.eq (local.get $got) (i32.const -1))
          (then (return (call $err (local.get $ret) (i32.const 4) (i32.const 64) (i32.const 11)))))
        ;; Touch the last byte, so the pages are really there.
        (i32.store8 $second
          (i32.sub (i32.shl (memory.size $second) (i32.const 16)) (i32.const 1))
          (i32.const 1))
        (return (call $ok (local.get $ret) (i32.const 1) (memory.size $second) (i32.const 0)))))
    (if (call $is (local.get $mptr) (local.get $mlen) (i32.const 48))
      (then
        (return (call $ok (local.get $ret) (i32.const 2) (memory.size $mem) (memory.size $second)))))
    (call $err (local.get $ret) (i32.const 2) (i32.const 96) (i32.const 14)))

  ;; After the host has read the reply: free everything this call allocated.
  (func (export "cabi_post_compose:dynlink/provider@0.1.0#invoke") (param i32)
    (global.set $heap (global.get $base)))
)
