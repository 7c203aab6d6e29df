; submitting a pointer that ringbuf_reserve did not return
; expect: reject "unmodified pointer from ringbuf_reserve"
*(u64 *)(r10 - 8) = 0
r1 = r10
r1 += -8
r2 = 0
call 132
r0 = 2
exit
