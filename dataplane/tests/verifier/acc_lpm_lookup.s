; an LPM trie lookup with an 8-byte key
; expect: accept
; maps: lpm_trie 8 4 128
*(u32 *)(r10 - 8) = 32
*(u32 *)(r10 - 4) = 0x0100000a
r2 = r10
r2 += -8
r1 = map[0] ll
call 1
if r0 == 0 goto out
r0 = *(u32 *)(r0 + 0)
exit
out:
r0 = 2
exit
