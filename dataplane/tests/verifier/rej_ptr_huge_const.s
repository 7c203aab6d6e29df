; a constant offset beyond the pointer limit
; expect: reject "pointer offset"
r1 = r10
r2 = 0x40000000 ll
r1 += r2
r0 = 2
exit
