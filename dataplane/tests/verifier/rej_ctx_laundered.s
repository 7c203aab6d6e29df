; the ctx pointer reaches a load through a stack copy the rewrite cannot see
; expect: reject "invalid access to ctx"
r2 = r10
r2 += -8
*(u64 *)(r10 - 8) = r1
r3 = *(u64 *)(r2 + 0)
r0 = *(u64 *)(r3 + 0)
exit
