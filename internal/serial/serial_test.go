package serial

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"strings"
	"testing"
)

func TestParseAcceptsTypedFormsAndRendersOneForm(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"2ab", "2ab"},
		{"02ab", "2ab"},
		{"02AB", "2ab"},
		{"0x02ab", "2ab"},
		{"0X2AB", "2ab"},
		{"02:ab", "2ab"},
		{"  00:02:AB\n", "2ab"},
		{"f", "f"},
		{"0f", "f"},
		{"0", "0"},
		{"0000", "0"},
		{strings.Repeat("0", 200) + "1", "1"},
		{strings.Repeat("f", MaxDigits), strings.Repeat("f", MaxDigits)},
		{"4" + strings.Repeat("0", 30), "4" + strings.Repeat("0", 30)},
	} {
		got, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got.String() != tc.want {
			t.Errorf("Parse(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if again, err := Parse(got.String()); err != nil || again != got {
			t.Errorf("Parse(%q) does not round-trip: %v, %v", got, again, err)
		}
	}
}

func TestParseRefusesJunk(t *testing.T) {
	for _, tc := range []struct{ in, says string }{
		{"", "empty"},
		{"   ", "empty"},
		{"0x", "empty"},
		{":::", "empty"},
		{"-5", "not a hexadecimal digit"},
		{"+5", "not a hexadecimal digit"},
		{"5g", "not a hexadecimal digit"},
		{"12 34", "not a hexadecimal digit"},
		{"12-34", "not a hexadecimal digit"},
		{"0x0x12", "not a hexadecimal digit"},
		{"１２", "not a hexadecimal digit"}, // full-width digits
		{strings.Repeat("f", MaxDigits+1), "significant digits"},
		{strings.Repeat("0", maxInput+1), "characters"},
	} {
		n, err := Parse(tc.in)
		if err == nil {
			t.Errorf("Parse(%q) = %q, want an error", tc.in, n)
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Parse(%q): %v, want ErrInvalid saying %q", tc.in, err, tc.says)
		}
	}
}

// Serials whose first byte is below 0x10 are where separate
// implementations drifted: the certificate's serial and a typed or pushed
// serial must meet in the same form whatever the first nibble.
func TestFromBigMatchesParse(t *testing.T) {
	for _, n := range []*big.Int{
		big.NewInt(1), big.NewInt(0x0f), big.NewInt(0x0abc), big.NewInt(0x1000),
		new(big.Int).Lsh(big.NewInt(1), 122), new(big.Int).Lsh(big.NewInt(0xff), 120),
	} {
		fb := FromBig(n)
		padded := "00" + strings.ToUpper(n.Text(16))
		p, err := Parse(padded)
		if err != nil || p != fb {
			t.Errorf("FromBig(%#x) = %q, Parse(%q) = %q, %v", n, fb, padded, p, err)
		}
		if strings.HasPrefix(fb.String(), "0") || fb.String() != strings.ToLower(fb.String()) {
			t.Errorf("FromBig(%#x) = %q, not canonical", n, fb)
		}
		if fb.Big().Cmp(n) != 0 {
			t.Errorf("FromBig(%#x).Big() = %#x", n, fb.Big())
		}
	}
}

func TestZeroNumber(t *testing.T) {
	var z Number
	if !z.IsZero() || z.String() != "" || z.Big() != nil || !FromBig(nil).IsZero() {
		t.Errorf("zero Number: IsZero %v, String %q, Big %v", z.IsZero(), z, z.Big())
	}
	if FromBig(big.NewInt(0)).IsZero() {
		t.Error("serial 0 is a serial, not the zero Number")
	}
}

// A Number in a log line or a JSON document reads as its canonical form,
// not as an empty struct.
func TestNumberLogsAndEncodesAsCanonicalForm(t *testing.T) {
	n, err := Parse("00:0A:BC")
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "serial", n)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "serial", n)
	js, err := json.Marshal(struct{ S Number }{n})
	if err != nil || string(js) != `{"S":"abc"}` {
		t.Errorf("json: %s, %v", js, err)
	}
	if out := buf.String(); !strings.Contains(out, `"serial":"abc"`) || !strings.Contains(out, "serial=abc") {
		t.Errorf("log lines do not carry the canonical form:\n%s", out)
	}
}
