; ringbuf_output from initialised stack
; expect: accept
; maps: ringbuf 0 0 4096
*(u64 *)(r10 - 8) = 5
*(u64 *)(r10 - 16) = 6
r1 = map[0] ll
r2 = r10
r2 += -16
r3 = 16
r4 = 0
call 130
r0 = 2
exit
