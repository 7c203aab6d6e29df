; trace_printk reads more stack than was written
; expect: reject "is not initialised"
*(u32 *)(r10 - 4) = 0
r1 = r10
r1 += -8
r2 = 8
call 6
r0 = 2
exit
