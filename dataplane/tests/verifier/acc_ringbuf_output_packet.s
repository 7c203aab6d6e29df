; ringbuf_output of checked packet bytes
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
; maps: ringbuf 0 0 4096
r4 = r2
r4 += 64
if r4 > r3 goto out
r1 = map[0] ll
r3 = 64
r4 = 0
call 130
out:
r0 = 2
exit
