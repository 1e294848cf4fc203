package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// ensureInDirectory puts user in the site's directory once per installation:
// the site-wide chat admits the directory's users, and users of one site see
// only that site's people.
func (s *Service) ensureInDirectory(ctx context.Context, inst, cloudID, user string) error {
	k := s.keys.user(inst, user)
	s.mu.RLock()
	_, known := s.inDir[k]
	s.mu.RUnlock()
	if known {
		return nil
	}
	_, err := s.kv.Get(ctx, inDirKey(inst, user))
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrSealed):
		dirs, err := s.UserDirectories(ctx, inst, cloudID, user)
		if err != nil {
			return err
		}
		if err := s.w.UpsertUser(ctx, user, weavy.Profile{Directories: dirs}); err != nil {
			return err
		}
		// Another site may have added its directory between our read and
		// our PUT, which replaced the whole list: send the newest once more.
		if again, err := s.readUserDirs(ctx, user); err == nil && !slices.Equal(again, dirs) {
			if err := s.w.UpsertUser(ctx, user, weavy.Profile{Directories: again}); err != nil {
				return err
			}
		}
		if err := s.DirectoryAssigned(ctx, inst, user); err != nil {
			return err
		}
	default:
		return fmt.Errorf("chat: reading the directory assignment: %w", err)
	}
	s.mu.Lock()
	putBounded(s.inDir, s.maxUsers, k, s.keys.tag(inst), s.evicted.directory)
	s.mu.Unlock()
	return nil
}

// UserDirectories creates the site's directory if needed, adds it to the
// user's list (kept across sites: with WEAVY_UID_SCOPE=account one Weavy
// user is every site's person) and returns the whole list, which is what
// Weavy ≥ 32's `directories` replaces. The profile sync sends it with the
// profile; DirectoryAssigned records that Weavy has it.
func (s *Service) UserDirectories(ctx context.Context, inst, cloudID, user string) ([]string, error) {
	if err := s.ensureDirectory(ctx, cloudID); err != nil {
		return nil, err
	}
	if err := s.checkSite(ctx, inst, cloudID); err != nil {
		return nil, err
	}
	dir := DirectoryName(cloudID)
	var dirs []string
	err := s.kv.Update(ctx, userDirsKey(user), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		dirs = nil
		if exists {
			_ = json.Unmarshal(old, &dirs)
		}
		if slices.Contains(dirs, dir) {
			return nil, 0, store.Keep
		}
		dirs = append(dirs, dir)
		slices.Sort(dirs)
		b, _ := json.Marshal(dirs)
		return b, 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("chat: recording the user's directories: %w", err)
	}
	return dirs, nil
}

// DirectoryAssigned records that Weavy has put user in the installation's
// site directory.
func (s *Service) DirectoryAssigned(ctx context.Context, inst, user string) error {
	if err := s.kv.Put(ctx, inDirKey(inst, user), []byte(user), 0); err != nil {
		return fmt.Errorf("chat: recording the directory assignment: %w", err)
	}
	return nil
}

func (s *Service) readUserDirs(ctx context.Context, user string) ([]string, error) {
	b, err := s.kv.Get(ctx, userDirsKey(user))
	if err != nil {
		return nil, err
	}
	var dirs []string
	return dirs, json.Unmarshal(b, &dirs)
}

// removeUserDirectory takes dir out of user's list (the site is uninstalled).
func (s *Service) removeUserDirectory(ctx context.Context, user, dir string) error {
	return s.kv.Update(ctx, userDirsKey(user), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		var dirs []string
		if exists {
			_ = json.Unmarshal(old, &dirs)
		}
		i := slices.Index(dirs, dir)
		switch {
		case i < 0:
			return nil, 0, store.Keep
		case len(dirs) == 1:
			return nil, 0, store.Remove
		}
		b, _ := json.Marshal(slices.Delete(dirs, i, i+1))
		return b, 0, nil
	})
}
