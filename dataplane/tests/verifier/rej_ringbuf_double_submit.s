; submitting the same reservation twice
; expect: reject "unmodified pointer from ringbuf_reserve"
; maps: ringbuf 0 0 4096
r1 = map[0] ll
r2 = 16
r3 = 0
call 131
if r0 == 0 goto out
*(u64 *)(r10 - 8) = r0
r1 = r0
r2 = 0
call 132
r1 = *(u64 *)(r10 - 8)
r2 = 0
call 132
out:
r0 = 2
exit
