; a global-data reference past the value
; expect: reject "outside the 16-byte value of map 0"
; maps: array 4 16 1
r1 = map_value[0] + 16 ll
r0 = 2
exit
