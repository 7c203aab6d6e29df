; callx to a helper id the verifier knows but the program's helper table lacks
; expect: reject "unknown helper id 60"
r2 = 60
callx r2
r0 = 2
exit
