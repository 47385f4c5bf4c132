package pgschema

import "testing"

// The migrations are numbered 1, 2, 3... in order: a database's count of
// applied steps equals its version, and Migrate applies them in order.
func TestMigrationsAreNumberedInOrder(t *testing.T) {
	for i, m := range migrations {
		if m.version != i+1 {
			t.Fatalf("migration %d has version %d, want %d", i, m.version, i+1)
		}
	}
	if Version() != len(migrations) {
		t.Fatalf("Version() = %d, want %d", Version(), len(migrations))
	}
}
