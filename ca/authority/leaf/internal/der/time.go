package der

import (
	"fmt"
	"time"
)

// UTCTime appends t, in UTC and to the second, as a UTCTime
// (YYMMDDHHMMSSZ). Like cryptobyte it refuses years outside 1950 through
// 2049, which the two-digit year of RFC 5280 4.1.2.5.1 cannot name.
func (w *Writer) UTCTime(t time.Time) {
	t = t.UTC()
	if y := t.Year(); y < 1950 || y >= 2050 {
		w.SetError(fmt.Errorf("der: cannot represent %v as a UTCTime", t))
		return
	}
	w.buf = append(w.buf, TagUTCTime, 13)
	w.buf = appendDigits(w.buf, t.Year()%100, 2)
	w.appendTimeOfYear(t)
}

// GeneralizedTime appends t, in UTC and to the second, as a
// GeneralizedTime (YYYYMMDDHHMMSSZ, RFC 5280 4.1.2.5.2). Like cryptobyte
// it refuses years outside 0 through 9999.
func (w *Writer) GeneralizedTime(t time.Time) {
	t = t.UTC()
	if y := t.Year(); y < 0 || y > generalizedYearsMax {
		w.SetError(fmt.Errorf("der: cannot represent %v as a GeneralizedTime", t))
		return
	}
	w.buf = append(w.buf, TagGeneralizedTime, 15)
	w.buf = appendDigits(w.buf, t.Year(), 4)
	w.appendTimeOfYear(t)
}

// appendTimeOfYear appends MMDDHHMMSSZ.
func (w *Writer) appendTimeOfYear(t time.Time) {
	_, month, day := t.Date()
	hour, minute, sec := t.Clock()
	for _, v := range [...]int{int(month), day, hour, minute, sec} {
		w.buf = appendDigits(w.buf, v, 2)
	}
	w.buf = append(w.buf, 'Z')
}

// appendDigits appends the width last decimal digits of v >= 0.
func appendDigits(b []byte, v, width int) []byte {
	var d [4]byte
	for i := width - 1; i >= 0; i-- {
		d[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, d[:width]...)
}
