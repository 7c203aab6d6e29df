; a read of stack never written
; expect: reject "is not initialised"
r0 = *(u64 *)(r10 - 8)
exit
