package index

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// metadataText returns the string and number values of the JSON value data,
// space-separated, in document order; object keys, booleans and nulls are
// left out, numbers are written as strconv.FormatFloat(x, 'f', -1, 64).
// Invalid JSON, and numbers out of float64's range, give "".
//
// It is what decoding data into an `any` and walking it gives (the walk
// visits object members in key order; the metadata of a stored event is
// canonical JSON, RFC 8785, whose members are already in key order), without
// building the maps and slices: the search index and the tail only use the
// words of the text, so only their set matters. It runs once for every
// appended event, on the sequencer's path.
func metadataText(data []byte) string {
	if !json.Valid(data) {
		return ""
	}
	var sb strings.Builder
	sb.Grow(len(data))
	sep := func() {
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
	}
	// inObject[d] says whether depth d is an object; key says whether the
	// next string is an object key.
	var inObject []bool
	key := false
	for i := 0; i < len(data); {
		switch c := data[i]; c {
		case ' ', '\t', '\n', '\r', ':':
			i++
		case ',':
			key = len(inObject) > 0 && inObject[len(inObject)-1]
			i++
		case '{', '[':
			inObject = append(inObject, c == '{')
			key = c == '{'
			i++
		case '}', ']':
			inObject = inObject[:len(inObject)-1]
			key = false
			i++
		case '"':
			j, escaped := i+1, false
			for ; data[j] != '"'; j++ { // valid JSON: the string ends
				if data[j] == '\\' {
					escaped = true
					j++
				}
			}
			if key {
				key = false
			} else if s := data[i+1 : j]; !escaped && utf8.Valid(s) {
				sep()
				sb.Write(s)
			} else {
				var v string
				if json.Unmarshal(data[i:j+1], &v) != nil {
					return ""
				}
				sep()
				sb.WriteString(v)
			}
			i = j + 1
		case 't', 'f', 'n': // true, false, null
			for i < len(data) && data[i] >= 'a' && data[i] <= 'z' {
				i++
			}
		default: // a number
			j := i
			for j < len(data) && (data[j] >= '0' && data[j] <= '9' || data[j] == '-' || data[j] == '+' || data[j] == '.' || data[j] == 'e' || data[j] == 'E') {
				j++
			}
			x, err := strconv.ParseFloat(string(data[i:j]), 64)
			if err != nil || j == i {
				return ""
			}
			sep()
			sb.WriteString(strconv.FormatFloat(x, 'f', -1, 64))
			i = j
		}
	}
	return sb.String()
}
