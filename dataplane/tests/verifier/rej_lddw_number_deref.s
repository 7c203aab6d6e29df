; a load through a 64-bit constant
; expect: reject "invalid mem access 'scalar'"
r5 = 0x7fff00001000 ll
r0 = *(u64 *)(r5 + 0)
exit
