package tensorjson

import "unsafe"

// unsafeString returns b's bytes as a string without a copy. Only for
// transient use by functions that do not retain their argument.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
