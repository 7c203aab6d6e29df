; the lookup result read before the null check
; expect: reject "invalid mem access 'map_value_or_null'"
; maps: hash 4 8 16
*(u32 *)(r10 - 4) = 1
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
r0 = *(u64 *)(r0 + 0)
exit
