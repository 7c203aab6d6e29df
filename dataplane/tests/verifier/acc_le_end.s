; le16/le32 truncations of a constant
; expect: accept
r0 = 0x12345678
r0 = le16 r0
r1 = 0x1122334455667788 ll
r1 = le32 r1
r0 += r1
exit
