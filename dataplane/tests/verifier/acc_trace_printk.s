; trace_printk with a format on the stack
; expect: accept
r1 = 0x0a7825
*(u32 *)(r10 - 4) = r1
r1 = r10
r1 += -4
r2 = 4
r3 = 42
call 6
r0 = 2
exit
