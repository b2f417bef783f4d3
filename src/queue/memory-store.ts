/*
 * queue/memory-store - the queue layer over the memory backend, for fast unit
 * tests of the scheduler, agents and reports (no durability); `failNext`
 * makes the next write fail, as a storage failure would.
 */
import { MemoryBackend } from './backends/memory.js';
import { Queue, type QueueOptions } from './queue.js';

export class MemoryStore extends Queue {
  private readonly memory: MemoryBackend;

  constructor(options: QueueOptions = {}) {
    const backend = new MemoryBackend();
    super(backend, options);
    this.memory = backend;
  }

  /** Test seam: the next write fails with this error. */
  get failNext(): Error | null {
    return this.memory.failNext;
  }
  set failNext(e: Error | null) {
    this.memory.failNext = e;
  }
}
