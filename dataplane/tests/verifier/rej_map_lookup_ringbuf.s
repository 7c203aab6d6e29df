; a lookup in a ring buffer
; expect: reject "helper map_lookup_elem arg1 (R1): expected a map with values"
; maps: ringbuf 0 0 4096
*(u32 *)(r10 - 4) = 1
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
r0 = 2
exit
