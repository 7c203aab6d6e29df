; subtracting a map value pointer from a stack pointer
; expect: reject "pointer -= pointer prohibited"
; maps: array 4 8 1
r1 = map_value[0] ll
r2 = r10
r2 -= r1
r0 = 2
exit
