package tensorjson

// Clinger's fast path: when a decimal's digits form an integer m that the
// float type holds exactly and its power of ten is exact too, one IEEE
// multiplication or division gives the correctly rounded value — the same
// one strconv returns, without its general machinery. Typical model inputs
// ("0.2142857", "-1.5", "42") take this path; the rest fall back to strconv.

var pow10f32 = [...]float32{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10}

var pow10f64 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// decimal splits a JSON number token (already validated) into sign, digits
// as an integer and a power of ten. ok is false when there are more than 19
// significant digits or the exponent is out of the small range handled here.
func decimal(tok []byte) (neg bool, m uint64, e10 int, ok bool) {
	i := 0
	if tok[0] == '-' {
		neg, i = true, 1
	}
	digits := 0
	for ; i < len(tok) && tok[i] >= '0' && tok[i] <= '9'; i++ {
		if m == 0 && tok[i] == '0' {
			continue // leading zero
		}
		m = m*10 + uint64(tok[i]-'0')
		digits++
	}
	if i < len(tok) && tok[i] == '.' {
		i++
		for ; i < len(tok) && tok[i] >= '0' && tok[i] <= '9'; i++ {
			if m == 0 && tok[i] == '0' {
				e10--
				continue
			}
			m = m*10 + uint64(tok[i]-'0')
			digits++
			e10--
		}
	}
	if digits > 19 {
		return false, 0, 0, false
	}
	if i < len(tok) { // exponent
		i++
		eneg := false
		if tok[i] == '+' || tok[i] == '-' {
			eneg = tok[i] == '-'
			i++
		}
		x := 0
		for ; i < len(tok); i++ {
			x = x*10 + int(tok[i]-'0')
			if x > 400 {
				return false, 0, 0, false
			}
		}
		if eneg {
			x = -x
		}
		e10 += x
	}
	return neg, m, e10, true
}

func fastF32(tok []byte) (float32, bool) { return fastFloat(tok, 24, pow10f32[:]) }
func fastF64(tok []byte) (float64, bool) { return fastFloat(tok, 53, pow10f64[:]) }

// fastFloat is Clinger's fast path for a float type with a mantissa of
// mantBits bits whose exact powers of ten are pow10.
func fastFloat[F float32 | float64](tok []byte, mantBits int, pow10 []F) (F, bool) {
	neg, m, e, ok := decimal(tok)
	if !ok || m >= 1<<mantBits || e < -(len(pow10)-1) || e > len(pow10)-1 {
		return 0, false
	}
	f := F(m)
	if e < 0 {
		f /= pow10[-e]
	} else {
		f *= pow10[e]
	}
	if neg {
		f = -f
	}
	return f, true
}
