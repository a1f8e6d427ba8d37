package relaywire

import "fmt"

// staleEpochFormat is the NACK error an agent sends for an output of an older epoch than
// the one it applied. The server recognises it (ParseStaleEpoch) to raise its lock above
// the agent's epoch and to show the refusal; it is part of the relay protocol.
const staleEpochFormat = "stale epoch: output epoch %d is older than applied epoch %d"

// StaleEpochError is the NACK error for an output of epoch refused, older than held.
func StaleEpochError(refused, held uint64) string {
	return fmt.Sprintf(staleEpochFormat, refused, held)
}

// ParseStaleEpoch reads a NACK error made by StaleEpochError; ok is false for any other.
func ParseStaleEpoch(nack string) (refused, held uint64, ok bool) {
	n, err := fmt.Sscanf(nack, staleEpochFormat, &refused, &held)
	return refused, held, err == nil && n == 2 && refused < held
}
