; a store into the context
; expect: reject "store through the ctx pointer"
*(u32 *)(r1 + 0) = 1
r0 = 2
exit
