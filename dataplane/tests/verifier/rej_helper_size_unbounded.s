; an unbounded size for ringbuf_output
; expect: reject "expected a bounded size"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
; maps: ringbuf 0 0 4096
r4 = r2
r4 += 8
if r4 > r3 goto out
r3 = *(u64 *)(r2 + 0)
r1 = map[0] ll
r4 = 0
call 130
out:
r0 = 2
exit
