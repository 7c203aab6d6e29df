; a load through a number
; expect: reject "invalid mem access 'scalar'"
r5 = 100
r0 = *(u8 *)(r5 + 0)
exit
