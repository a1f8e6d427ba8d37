package relaywire

import "context"

// Receive reads a stream's messages in the background, so that the caller can wait for a
// message together with other events. It delivers messages on the first channel and the
// error that ended the stream on the second; the goroutine ends when recv fails (the stream
// ended) or ctx ends.
func Receive[T any](ctx context.Context, recv func() (T, error)) (<-chan T, <-chan error) {
	msgs := make(chan T)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return msgs, errc
}
