//go:build race

package soak

// raceEnabled: the tests run with -race, so the tollgate binary is built with it too.
const raceEnabled = true
