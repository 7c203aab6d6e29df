; a callee storing its stack address in the caller's frame
; expect: reject "pointer into the stack of the returning function"
r1 = r10
r1 += -8
call f
r0 = 2
exit
f:
r2 = r10
r2 += -16
*(u64 *)(r1 + 0) = r2
r0 = 0
exit
