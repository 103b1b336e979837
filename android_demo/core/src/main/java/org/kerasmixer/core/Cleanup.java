package org.kerasmixer.core;

import java.util.ArrayDeque;
import java.util.Deque;

/**
 * Closes what a multi-step load created if a later step fails: register each resource as it is made, call
 * {@link #keep()} when the whole load succeeded; closing before that closes everything registered, newest first,
 * and keeps the first failure with the others suppressed. (An interpreter whose delegate fails to load must not
 * leak the delegates and native memory already created.)
 */
public final class Cleanup implements AutoCloseable {
  private final Deque<AutoCloseable> resources = new ArrayDeque<>();
  private boolean kept;

  /** Registers {@code resource} (null is ignored) and returns it. */
  public <T extends AutoCloseable> T add(T resource) {
    if (resource != null) {
      resources.push(resource);
    }
    return resource;
  }

  /** The load succeeded: the resources now belong to the caller, {@link #close()} leaves them open. */
  public void keep() {
    kept = true;
  }

  @Override
  public void close() {
    if (kept) {
      return;
    }
    RuntimeException first = null;
    while (!resources.isEmpty()) {
      try {
        resources.pop().close();
      } catch (Exception e) {
        RuntimeException wrapped = e instanceof RuntimeException ? (RuntimeException) e : new RuntimeException(e);
        if (first == null) {
          first = wrapped;
        } else {
          first.addSuppressed(e);
        }
      }
    }
    if (first != null) {
      throw first;
    }
  }
}
